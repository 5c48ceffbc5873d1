//! One command at a time per aggregate inside a process.
//!
//! Commands on one aggregate all append to the same stream; run at once in
//! one process, all but one lose the version race, back off and try again.
//! The service lets them through one at a time instead: the others wait,
//! and the store's conditional append still decides between processes.
//!
//! Written here rather than taken from an async runtime's mutex: the core
//! depends on no runtime, and its futures run on any executor. A waiting
//! command leaves its waker; the holder wakes every waiter when it leaves
//! (one gets through, the others wait again), so a waiter that is dropped
//! costs nothing but a spurious wake-up.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Keys held, each with the wakers of those waiting for it.
#[derive(Debug)]
pub(crate) struct Gate<K> {
    held: Mutex<HashMap<K, Vec<Waker>>>,
}

impl<K> Default for Gate<K> {
    fn default() -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Gate<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Vec<Waker>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no one else holds `key`, then holds it until the
    /// returned [`Pass`] is dropped.
    pub(crate) fn enter(&self, key: &K) -> Enter<'_, K> {
        Enter {
            gate: self,
            key: key.clone(),
        }
    }

    /// How many keys are held (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().len()
    }
}

/// The wait for a key.
pub(crate) struct Enter<'a, K: Eq + Hash + Clone> {
    gate: &'a Gate<K>,
    key: K,
}

impl<'a, K: Eq + Hash + Clone + Unpin> Future for Enter<'a, K> {
    type Output = Pass<'a, K>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Pass<'a, K>> {
        let mut held = self.gate.lock();
        match held.get_mut(&self.key) {
            Some(waiters) => {
                waiters.push(cx.waker().clone());
                Poll::Pending
            }
            None => {
                held.insert(self.key.clone(), Vec::new());
                Poll::Ready(Pass {
                    gate: self.gate,
                    key: self.key.clone(),
                })
            }
        }
    }
}

/// A held key; dropping it lets the next command through.
pub(crate) struct Pass<'a, K: Eq + Hash + Clone> {
    gate: &'a Gate<K>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Pass<'_, K> {
    fn drop(&mut self) {
        let waiters = self.gate.lock().remove(&self.key).unwrap_or_default();
        for waker in waiters {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::block_on;

    #[test]
    fn a_key_is_held_by_one_at_a_time_and_released_on_drop() {
        let gate: Gate<&str> = Gate::default();
        let first = block_on(gate.enter(&"sku-1"));
        let mut second = Box::pin(gate.enter(&"sku-1"));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(second.as_mut().poll(&mut cx).is_pending(), "held by first");
        // Another key is not held up.
        let other = block_on(gate.enter(&"sku-2"));
        assert_eq!(gate.held(), 2);
        drop(first);
        assert!(second.as_mut().poll(&mut cx).is_ready(), "released");
        drop(other);
        drop(second);
        assert_eq!(gate.held(), 0, "nothing left behind");
    }

    #[test]
    fn the_holder_leaving_wakes_those_waiting() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let gate: Gate<u8> = Gate::default();
        let held = block_on(gate.enter(&1));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut waiting = Box::pin(gate.enter(&1));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken when released");
        assert!(waiting.as_mut().poll(&mut cx).is_ready());
    }
}
