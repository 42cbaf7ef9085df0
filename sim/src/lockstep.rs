//! Keeps the node's blocking threads in lock-step with the simulation thread.
//!
//! turmoil runs every host on a tokio runtime whose clock is paused and advances only when the
//! runtime is idle; tokio does not advance it while a `spawn_blocking` task is in flight, so a
//! host's tick waits (in real time) for its blocking work to finish. Node code only hands blocking
//! threads work they can finish on their own (disk I/O and hashing, never a wait for the network),
//! so no tick waits for long. What remains is *when* a blocking task's completion is seen: if the
//! simulation thread went on while a blocking thread was still working, the completion's place in
//! the run queue would depend on the machine's speed. So whenever the simulation thread wakes a
//! thread (a futex wake, see [`crate::determinism`]) or starts one, [`settle`] waits until every
//! other thread of the process is parked again: the woken work is then done before the simulation
//! goes on, whatever the machine's speed. Threads are observed through `/proc/self/task/*`.
//!
//! The simulation thread's `CLOCK_MONOTONIC` is simulated time too ([`virtual_now`]), for the
//! libraries that time things with `std::time::Instant`.
//!
//! Real time decides nothing here: it only bounds how long [`settle`] waits before it counts a
//! settle that gave up (reported; a run with any is not guaranteed to replay), and [`HangAlarm`]
//! ends a run whose simulation thread made no progress for minutes (a blocking task that waits
//! for the network would freeze the clock).
//!
//! One simulation per process at a time: the state is process-wide.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The simulation thread's kernel thread id (0: none).
static SIM_TID: AtomicI64 = AtomicI64::new(0);
/// Real monotonic nanoseconds, whatever thread asks (the simulation thread's `Instant::now()` is
/// simulated time, see [`virtual_now`]).
fn now_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; the raw system call bypasses the interposed clock.
    unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC,
            &mut ts as *mut libc::timespec,
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 + 1
}

/// Simulated time at the current step, as the simulation thread's monotonic clock reads it.
static SIM_NOW_NANOS: AtomicU64 = AtomicU64::new(0);
/// Where the simulated monotonic clock starts (an arbitrary, fixed point).
const VIRTUAL_BASE_NANOS: u64 = 1_000_000 * 1_000_000_000;

/// Sets the simulated time the simulation thread's monotonic clock reads during the next step.
pub fn set_sim_now(elapsed: Duration) {
    SIM_NOW_NANOS.store(elapsed.as_nanos() as u64, Ordering::SeqCst);
}

/// The simulation thread's `CLOCK_MONOTONIC`: libraries that time things with
/// `std::time::Instant` (hyper's HTTP/2 keep-alive, h2's reset-stream expiry) then see simulated
/// time, as tokio's paused clock does, instead of how fast the machine runs the simulation.
pub fn virtual_now() -> Option<Duration> {
    if !on_sim_thread() || SIM_TID.load(Ordering::Relaxed) == 0 {
        return None;
    }
    Some(Duration::from_nanos(
        VIRTUAL_BASE_NANOS + SIM_NOW_NANOS.load(Ordering::SeqCst),
    ))
}

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i64 }
}

/// Whether the calling thread is the simulation thread.
pub fn on_sim_thread() -> bool {
    let tid = SIM_TID.load(Ordering::Relaxed);
    tid != 0 && tid == gettid()
}

/// One thread's scheduling state: whether it is parked in a futex wait, and how often it has
/// blocked so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadState {
    tid: String,
    parked: bool,
    voluntary: u64,
}

/// Every thread but the simulation thread and the hang alarm.
fn threads() -> Vec<ThreadState> {
    let futex = if cfg!(target_arch = "aarch64") { "98 " } else { "202 " };
    let sim = SIM_TID.load(Ordering::SeqCst).to_string();
    let dog = ALARM_TID.load(Ordering::SeqCst).to_string();
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if tid == sim || tid == dog {
            continue;
        }
        let Ok(state) = std::fs::read_to_string(task.path().join("syscall")) else {
            continue; // the thread just exited
        };
        let voluntary = std::fs::read_to_string(task.path().join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push(ThreadState {
            tid,
            parked: state.starts_with(futex),
            voluntary,
        });
    }
    out.sort_by(|a, b| a.tid.cmp(&b.tid));
    out
}

/// How long the simulation thread waits for other threads to settle before giving up (and
/// saying so: determinism is then not guaranteed).
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// After the simulation thread woke `woken` threads (or started one), waits until that many
/// threads have run and blocked again and every thread is parked, twice in a row: whatever the
/// woken threads do in reaction (a blocking task's I/O, its wake-up of the runtime) is then done
/// before the simulation thread goes on, so it is never a race.
fn settle(before: &[ThreadState], woken: usize) {
    let started = now_nanos();
    let mut previous: Option<Vec<ThreadState>> = None;
    loop {
        std::thread::sleep(Duration::from_micros(30));
        let now = threads();
        let ran = now
            .iter()
            .filter(|t| {
                before
                    .iter()
                    .find(|b| b.tid == t.tid)
                    .is_none_or(|b| t.voluntary > b.voluntary)
            })
            .count();
        let exited = before.iter().filter(|b| !now.iter().any(|t| t.tid == b.tid)).count();
        let moved = ran + exited;
        let quiet = moved >= woken && now.iter().all(|t| t.parked);
        if quiet && previous.as_ref() == Some(&now) {
            return;
        }
        previous = quiet.then_some(now);
        if now_nanos() - started > SETTLE_LIMIT.as_nanos() as u64 {
            SETTLE_TIMEOUTS.fetch_add(1, Ordering::SeqCst);
            if std::env::var_os("KEELSON_SIM_DEBUG_STALL").is_some() {
                let detail: Vec<String> = threads()
                    .iter()
                    .map(|t| {
                        let comm =
                            std::fs::read_to_string(format!("/proc/self/task/{}/comm", t.tid)).unwrap_or_default();
                        let sc =
                            std::fs::read_to_string(format!("/proc/self/task/{}/syscall", t.tid)).unwrap_or_default();
                        format!(
                            "{} {} parked={} vol={} before={:?} sc={}",
                            t.tid,
                            comm.trim(),
                            t.parked,
                            t.voluntary,
                            before.iter().find(|b| b.tid == t.tid).map(|b| b.voluntary),
                            sc.split(' ').next().unwrap_or("")
                        )
                    })
                    .collect();
                eprintln!("stall: settle gave up (woken {woken}): {}", detail.join(" | "));
            }
            return;
        }
    }
}

/// Settles that gave up (reported: a run with any is not guaranteed to replay).
static SETTLE_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static ALARM_TID: AtomicI64 = AtomicI64::new(0);

/// Called by the interposer around a futex wake by the simulation thread.
pub fn wake(forward: impl FnOnce() -> i64) -> i64 {
    let before = threads();
    let woken = forward();
    if woken > 0 {
        settle(&before, woken as usize);
    }
    woken
}

/// Called by the interposer around a thread creation by the simulation thread.
pub fn spawn(forward: impl FnOnce() -> i32) -> i32 {
    let before = threads();
    let r = forward();
    if r == 0 {
        // The new thread is listed from the moment it exists; it may also be gone already.
        settle(&before, 0);
    }
    r
}

/// Settles that gave up so far.
pub fn settle_timeouts() -> u64 {
    SETTLE_TIMEOUTS.load(Ordering::SeqCst)
}

/// Steps the simulation thread has finished (the hang alarm watches it move).
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Called by the simulation loop after every step.
pub fn step_done() {
    STEPS.fetch_add(1, Ordering::SeqCst);
}

/// How long one step may take in real time before the run is declared hung.
const HANG_LIMIT: Duration = Duration::from_secs(180);

/// Registers the calling thread as the simulation thread and watches it for hangs; unregisters
/// when dropped.
pub struct HangAlarm {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HangAlarm {
    /// Registers the calling thread (the simulation thread). `seed` names the run in the alarm.
    pub fn start(seed: u64) -> std::io::Result<HangAlarm> {
        SIM_TID.store(gettid(), Ordering::SeqCst);
        SETTLE_TIMEOUTS.store(0, Ordering::SeqCst);
        SIM_NOW_NANOS.store(0, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sim-hang-alarm".into())
            .spawn(move || watch(&flag, seed))?;
        Ok(HangAlarm {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HangAlarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        SIM_TID.store(0, Ordering::SeqCst);
    }
}

/// Ends the process when the simulation thread is stuck in one step: nothing inside the
/// simulation can end such a step, and a silent hang would stall a sweep or CI.
fn watch(stop: &AtomicBool, seed: u64) {
    ALARM_TID.store(gettid(), Ordering::SeqCst);
    let mut seen = STEPS.load(Ordering::SeqCst);
    let mut since = now_nanos();
    while !stop.load(Ordering::SeqCst) {
        std::thread::park_timeout(Duration::from_secs(1));
        let steps = STEPS.load(Ordering::SeqCst);
        if steps != seen {
            seen = steps;
            since = now_nanos();
        } else if now_nanos() - since > HANG_LIMIT.as_nanos() as u64 {
            eprintln!(
                "keelson-sim: seed {seed} hung: one simulation step ran for {} s of real time \
                 (a blocking task waiting for the network freezes the simulated clock)",
                HANG_LIMIT.as_secs()
            );
            std::process::exit(3);
        }
    }
}
