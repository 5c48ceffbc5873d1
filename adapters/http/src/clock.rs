//! The clock both cells run with.

use std::future::Future;
use std::time::Duration;

use twincell_core::{Clock, SystemClock, Timestamp};

/// The system clock, waiting with tokio's timer, so the service's backoff
/// after a lost version race really spreads writers out (the core's
/// [`SystemClock`] cannot wait: the core has no runtime).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        SystemClock.now()
    }

    fn pause(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pause_waits_on_the_runtime_timer() {
        let start = tokio::time::Instant::now();
        TokioClock.pause(Duration::from_millis(40)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }
}
