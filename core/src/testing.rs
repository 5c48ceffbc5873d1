//! Deterministic stand-ins for the clock and the id generator, and a minimal
//! executor, for tests, benchmarks and contract runs. Only compiled with the
//! `test-util` feature.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use uuid::Uuid;

pub mod store_contract;

use crate::ports::{Clock, IdGenerator};
use crate::timestamp::Timestamp;

/// A clock that starts at a fixed instant and moves `step` milliseconds
/// forward every time it is read (0 for a frozen clock).
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
    step: i64,
}

impl ManualClock {
    /// Starts at `start` and advances `step` ms per read.
    #[must_use]
    pub fn new(start: Timestamp, step: i64) -> Self {
        Self {
            millis: AtomicI64::new(start.unix_millis()),
            step,
        }
    }

    /// Moves the clock by `millis`.
    pub fn advance(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let millis = self.millis.fetch_add(self.step, Ordering::SeqCst);
        Timestamp::from_unix_millis(millis.clamp(0, Timestamp::MAX_MILLIS))
            .unwrap_or(Timestamp::EPOCH)
    }

    /// Does not wait: tests stay instant (the clock's own time is only
    /// moved by [`ManualClock::advance`] and its step).
    fn pause(&self, duration: std::time::Duration) -> impl std::future::Future<Output = ()> + Send {
        let _ = duration;
        std::future::ready(())
    }
}

/// Ids `00000000-0000-7000-8000-000000000001`, `…0002`, …: valid UUIDv7
/// layout, predictable values.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl SequentialIds {
    /// Starts after `offset` (so two cells can use disjoint ranges).
    #[must_use]
    pub fn starting_after(offset: u64) -> Self {
        Self {
            next: AtomicU64::new(offset),
        }
    }
}

impl IdGenerator for SequentialIds {
    fn new_id(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        Uuid::from_u128((0x7000_u128 << 64) | (0x8000_u128 << 48) | u128::from(n))
    }
}

/// Runs a future to completion on the current thread. For futures that are
/// ready at once or soon (the in-memory store); it spins on `Pending`.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}
