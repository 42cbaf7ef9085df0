//! Keeps simulated time moving while a node's `spawn_blocking` task waits for network input.
//!
//! turmoil runs every host on a tokio runtime whose clock is paused and advances only when the
//! runtime is idle — and tokio never auto-advances a paused clock while any `spawn_blocking`
//! task is alive. Keelson's upload sessions write through a blocking worker that stays alive,
//! waiting on a channel, until the request body has arrived; the body can only arrive when
//! simulated time moves on; so the host's tick would never end and the whole simulation would
//! hang. (A real node is unaffected: real time does not wait for blocking tasks.)
//!
//! The fix here, without touching node code: a watchdog thread notices when the simulation
//! thread is parked waiting for the clock *and* every tokio blocking thread is parked too (so no
//! blocking task is doing I/O that would end the wait by itself), and then wakes a small
//! "pusher" task in each node host; the first one to run (the stuck host's) advances that host's
//! clock to the end of its tick, exactly what auto-advance would have done. Parking is observed
//! through the `futex` calls the simulation thread makes (see [`crate::determinism`]) and the
//! `/proc/self/task/*/syscall` state of tokio's blocking threads. Because the decision is taken
//! only when the whole process is quiescent, it does not depend on how fast the machine is.
//!
//! One simulation per process at a time: the state is process-wide.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The simulation thread's kernel thread id (0: none).
static SIM_TID: AtomicI64 = AtomicI64::new(0);
/// Whether the simulation thread is inside a timed futex wait right now.
static SIM_WAITING: AtomicBool = AtomicBool::new(false);
/// Nanoseconds (since [`origin`]) at which the simulation thread began waiting without being
/// woken since; 0 while it is not idle.
static IDLE_SINCE: AtomicU64 = AtomicU64::new(0);
/// Kicks issued by the watchdog, and kicks consumed by a pusher.
static KICKS: AtomicU64 = AtomicU64::new(0);
static CONSUMED: AtomicU64 = AtomicU64::new(0);
/// The latest waker of every pusher, by pusher id (kept across kicks, so a stuck host's pusher is
/// always reachable).
static WAKERS: Mutex<Vec<(u64, Waker)>> = Mutex::new(Vec::new());
static NEXT_PUSHER: AtomicU64 = AtomicU64::new(1);
/// Kicks after which the simulation thread did not wake (reported).
static LOST_KICKS: AtomicU64 = AtomicU64::new(0);
/// How many times simulated time was pushed (for the report).
static PUSHES: AtomicU64 = AtomicU64::new(0);

/// How long the process must have been quiescent before time is pushed.
const QUIET: Duration = Duration::from_micros(300);
/// How often the watchdog looks.
const POLL: Duration = Duration::from_micros(100);

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

/// Called by the `syscall` interposer around a timed futex wait of the simulation thread.
pub fn wait_begins() {
    let _ = IDLE_SINCE.compare_exchange(0, now_nanos(), Ordering::SeqCst, Ordering::SeqCst);
    SIM_WAITING.store(true, Ordering::SeqCst);
}

/// Called after that wait; `timed_out` when nothing woke the thread.
pub fn wait_ends(timed_out: bool) {
    SIM_WAITING.store(false, Ordering::SeqCst);
    if !timed_out {
        IDLE_SINCE.store(0, Ordering::SeqCst);
    }
}

/// One thread's scheduling state: whether it is parked in a futex wait, and how often it has
/// blocked so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadState {
    tid: String,
    parked: bool,
    voluntary: u64,
}

/// Every thread but the simulation thread and the watchdog.
fn threads() -> Vec<ThreadState> {
    let futex = if cfg!(target_arch = "aarch64") { "98 " } else { "202 " };
    let sim = SIM_TID.load(Ordering::SeqCst).to_string();
    let dog = WATCHDOG_TID.load(Ordering::SeqCst).to_string();
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
static WATCHDOG_TID: AtomicI64 = AtomicI64::new(0);

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

/// The watchdog of one simulation; stops when dropped.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Watches the calling thread (the simulation thread).
    pub fn start() -> std::io::Result<Watchdog> {
        SIM_TID.store(gettid(), Ordering::SeqCst);
        IDLE_SINCE.store(0, Ordering::SeqCst);
        PUSHES.store(0, Ordering::SeqCst);
        SETTLE_TIMEOUTS.store(0, Ordering::SeqCst);
        LOST_KICKS.store(0, Ordering::SeqCst);
        WAKERS.lock().unwrap_or_else(|p| p.into_inner()).clear();
        SIM_NOW_NANOS.store(0, Ordering::SeqCst);
        CONSUMED.store(KICKS.load(Ordering::SeqCst), Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sim-watchdog".into())
            .spawn(move || watch(&flag))?;
        Ok(Watchdog {
            stop,
            thread: Some(thread),
        })
    }

    /// Kicks that woke nothing so far.
    pub fn lost_kicks(&self) -> u64 {
        LOST_KICKS.load(Ordering::SeqCst)
    }

    /// How many times time was pushed so far.
    pub fn pushes(&self) -> u64 {
        PUSHES.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        SIM_TID.store(0, Ordering::SeqCst);
    }
}

fn watch(stop: &AtomicBool) {
    WATCHDOG_TID.store(gettid(), Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        let idle = IDLE_SINCE.load(Ordering::SeqCst);
        if idle == 0 || !SIM_WAITING.load(Ordering::SeqCst) {
            continue;
        }
        if now_nanos().saturating_sub(idle) < QUIET.as_nanos() as u64 {
            continue;
        }
        let before = threads();
        if !before.iter().all(|t| t.parked) {
            continue;
        }
        std::thread::sleep(QUIET);
        if threads() != before {
            continue;
        }
        if IDLE_SINCE.load(Ordering::SeqCst) != idle || !SIM_WAITING.load(Ordering::SeqCst) {
            continue;
        }
        KICKS.fetch_add(1, Ordering::SeqCst);
        let wakers: Vec<Waker> = WAKERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, w)| w.clone())
            .collect();
        for w in wakers {
            w.wake();
        }
        // Give the woken runtime a moment before looking again.
        let kicked = now_nanos();
        while !stop.load(Ordering::SeqCst) && IDLE_SINCE.load(Ordering::SeqCst) == idle {
            if now_nanos() - kicked > 100_000_000 {
                LOST_KICKS.fetch_add(1, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Resolves when the watchdog kicked and this is the first pusher to see it.
struct Kick(u64);

impl Future for Kick {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let take = || {
            let kicks = KICKS.load(Ordering::SeqCst);
            let consumed = CONSUMED.load(Ordering::SeqCst);
            kicks > consumed
                && CONSUMED
                    .compare_exchange(consumed, kicks, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        };
        if take() {
            return Poll::Ready(());
        }
        {
            let mut wakers = WAKERS.lock().unwrap_or_else(|p| p.into_inner());
            match wakers.iter_mut().find(|(id, _)| *id == self.0) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => wakers.push((self.0, cx.waker().clone())),
            }
        }
        if take() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Runs inside every node host: ends the host's tick when the watchdog says it is stuck.
pub async fn pusher(host: String) {
    let debug = std::env::var_os("KEELSON_SIM_DEBUG_STALL").is_some();
    let id = NEXT_PUSHER.fetch_add(1, Ordering::SeqCst);
    let _registered = Registration(id);
    loop {
        Kick(id).await;
        PUSHES.fetch_add(1, Ordering::SeqCst);
        if debug {
            eprintln!("stall: pushing {host} at {:?}", turmoil::sim_elapsed());
        }
        tokio::time::advance(Duration::from_millis(1)).await;
    }
}

/// Removes a pusher's waker when its host's runtime drops it (crash).
struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        WAKERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _)| *id != self.0);
    }
}
