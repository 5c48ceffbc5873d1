//! The production clock and ids: the system time, a wait that needs no
//! async runtime, and random UUIDv7 ids.

use std::future::Future;

use uuid::Uuid;

use crate::ports::{Clock, IdGenerator};
use crate::timestamp::Timestamp;

/// A wait that needs no async runtime: a thread sleeps until the deadline
/// and wakes the task. Written here because the core depends on no runtime
/// and no timer crate; a pause happens only after a lost version race, so a
/// short-lived thread per pause costs little next to the pause itself. When
/// no thread can be started, the wait ends at once (a backoff skipped, never
/// an error).
#[derive(Debug)]
pub struct ThreadSleep {
    deadline: std::time::Instant,
    shared: Option<std::sync::Arc<std::sync::Mutex<SleepState>>>,
}

#[derive(Debug, Default)]
struct SleepState {
    done: bool,
    waker: Option<std::task::Waker>,
}

impl ThreadSleep {
    /// A wait of `duration` from now.
    #[must_use]
    pub fn new(duration: std::time::Duration) -> Self {
        let now = std::time::Instant::now();
        Self {
            deadline: now.checked_add(duration).unwrap_or(now),
            shared: None,
        }
    }
}

impl Future for ThreadSleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::sync::{Arc, Mutex, PoisonError};
        use std::task::Poll;
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Poll::Ready(());
        }
        if let Some(shared) = &self.shared {
            let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if state.done {
                return Poll::Ready(());
            }
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let shared = Arc::new(Mutex::new(SleepState {
            done: false,
            waker: Some(cx.waker().clone()),
        }));
        let timer = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("twincell-pause".to_owned())
            .spawn(move || {
                std::thread::sleep(left);
                let waker = {
                    let mut state = timer.lock().unwrap_or_else(PoisonError::into_inner);
                    state.done = true;
                    state.waker.take()
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
            });
        if started.is_err() {
            return Poll::Ready(());
        }
        self.shared = Some(shared);
        Poll::Pending
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // A system clock outside 1970..=9999 is clamped rather than trusted.
        Timestamp::from_unix_millis(millis.clamp(0, Timestamp::MAX_MILLIS))
            .unwrap_or(Timestamp::EPOCH)
    }

    /// Really waits, whatever the executor ([`ThreadSleep`]).
    fn pause(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send {
        ThreadSleep::new(duration)
    }
}

/// Random, time-ordered UUIDv7 ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wakes the thread that runs [`park_on`].
    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs `future` on this thread, polling it only when woken (or after
    /// 5 s, so a lost wake-up fails instead of hanging); gives the output
    /// and the number of polls.
    fn park_on<F: Future>(future: F) -> (F::Output, u32) {
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        let mut polls = 0;
        loop {
            polls += 1;
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return (out, polls);
            }
            std::thread::park_timeout(std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn the_system_clock_waits_and_wakes_the_task_itself() {
        let pause = std::time::Duration::from_millis(40);
        let started = std::time::Instant::now();
        let ((), polls) = park_on(SystemClock.pause(pause));
        let waited = started.elapsed();
        assert!(waited >= pause, "waited only {waited:?}");
        // Woken by its timer thread, not found ready by a later poll: a
        // spurious unpark may add a poll, a missing wake-up would show as a
        // 5 s wait.
        assert!(polls <= 3, "{polls} polls");
        assert!(
            waited < std::time::Duration::from_secs(5),
            "no wake-up: {waited:?}"
        );
        let ((), polls) = park_on(ThreadSleep::new(std::time::Duration::ZERO));
        assert_eq!(polls, 1, "no wait is ready at once");
    }
}
