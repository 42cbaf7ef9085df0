//! A byte-rate limiter for background jobs, so repair and scrub never starve client traffic.

use std::time::Duration;

use tokio::time::Instant;

pub struct Throttle {
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    start: Instant,
    spent: u64,
}

impl Throttle {
    pub fn new(rate: u64) -> Self {
        Throttle {
            rate,
            start: Instant::now(),
            spent: 0,
        }
    }

    /// Accounts for `bytes` and waits until the average rate is back under the limit.
    pub async fn pace(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.spent += bytes;
        let due = Duration::from_secs_f64(self.spent as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}
