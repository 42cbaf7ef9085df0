//! Drives one operation from N concurrent workers until a deadline or a request budget
//! is used up, timing each operation. Workers start no new operation after the
//! deadline but finish the one in flight (a 1 GiB push is not cut short), and the run's
//! elapsed time ends when the last worker is done.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::HttpError;
use crate::stats::Recorder;

/// One measured operation. `seq` is unique within a run (warmup included), so an
/// operation can make each request distinct.
pub trait Op: Send + Sync + 'static {
    /// Does one operation and returns the payload bytes it moved.
    fn run(&self, seq: u64) -> impl Future<Output = Result<u64, HttpError>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Duration(Duration),
    Requests(u64),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    pub limit: Limit,
    pub warmup: Duration,
    pub timeout: Duration,
    /// The run stops early after this many errors.
    pub max_errors: u64,
}

pub struct Outcome {
    pub recorder: Recorder,
    pub elapsed: Duration,
    /// True if the run stopped because of `max_errors`.
    pub aborted: bool,
}

struct Shared<O> {
    op: O,
    seq: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    timeout: Duration,
    max_errors: u64,
}

/// When a phase ends.
#[derive(Clone, Copy)]
enum Until {
    Deadline(Instant),
    /// Sequence numbers below this bound.
    Seq(u64),
}

async fn worker<O: Op>(shared: Arc<Shared<O>>, until: Until, record: bool) -> Recorder {
    let mut rec = Recorder::default();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = match until {
            Until::Deadline(d) => {
                if Instant::now() >= d {
                    break;
                }
                shared.seq.fetch_add(1, Ordering::Relaxed)
            }
            Until::Seq(end) => {
                let s = shared.seq.fetch_add(1, Ordering::Relaxed);
                if s >= end {
                    break;
                }
                s
            }
        };
        let t0 = Instant::now();
        let res = tokio::time::timeout(shared.timeout, shared.op.run(seq)).await;
        let lat = t0.elapsed();
        let err = match res {
            Ok(Ok(bytes)) => {
                if record {
                    rec.success(lat, bytes);
                }
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("operation {seq} timed out after {:?}", shared.timeout),
        };
        if record {
            rec.failure(err);
        }
        if shared.errors.fetch_add(1, Ordering::Relaxed) + 1 >= shared.max_errors {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    rec
}

async fn phase<O: Op>(shared: &Arc<Shared<O>>, n: usize, until: Until, record: bool) -> Recorder {
    let handles: Vec<_> = (0..n)
        .map(|_| tokio::spawn(worker(shared.clone(), until, record)))
        .collect();
    let mut total = Recorder::default();
    for h in handles {
        match h.await {
            Ok(rec) => total.merge(rec),
            Err(e) => total.failure(format!("worker task failed: {e}")),
        }
    }
    total
}

/// Runs `op` as `plan` says: an unrecorded warmup, then the measured phase.
pub async fn run<O: Op>(op: O, plan: &Plan) -> Outcome {
    let shared = Arc::new(Shared {
        op,
        seq: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        timeout: plan.timeout,
        max_errors: plan.max_errors.max(1),
    });
    let n = plan.concurrency.max(1);
    if !plan.warmup.is_zero() {
        phase(&shared, n, Until::Deadline(Instant::now() + plan.warmup), false).await;
        shared.errors.store(0, Ordering::Relaxed);
    }
    let start = Instant::now();
    let until = match plan.limit {
        Limit::Duration(d) => Until::Deadline(start + d),
        Limit::Requests(r) => Until::Seq(shared.seq.load(Ordering::Relaxed) + r),
    };
    let recorder = phase(&shared, n, until, true).await;
    Outcome {
        recorder,
        elapsed: start.elapsed(),
        aborted: shared.stop.load(Ordering::Relaxed) && shared.errors.load(Ordering::Relaxed) >= shared.max_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleepy;
    impl Op for Sleepy {
        async fn run(&self, seq: u64) -> Result<u64, HttpError> {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if seq % 10 == 9 {
                Err(HttpError::BadUrl(format!("fail {seq}")))
            } else {
                Ok(100)
            }
        }
    }

    #[tokio::test]
    async fn request_budget() {
        let plan = Plan {
            concurrency: 4,
            limit: Limit::Requests(50),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
            max_errors: 1000,
        };
        let out = run(Sleepy, &plan).await;
        assert_eq!(out.recorder.ok + out.recorder.errors, 50);
        assert_eq!(out.recorder.errors, 5);
        assert_eq!(out.recorder.bytes, 4500);
        assert!(!out.aborted);
    }

    #[tokio::test]
    async fn max_errors_stops() {
        let plan = Plan {
            concurrency: 2,
            limit: Limit::Duration(Duration::from_secs(30)),
            warmup: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            max_errors: 3,
        };
        let out = run(Sleepy, &plan).await;
        assert!(out.aborted);
        assert!(out.elapsed < Duration::from_secs(5));
    }
}
