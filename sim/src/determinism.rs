//! Makes the randomness that node code draws the ordinary way a function of the seed.
//!
//! Node code is not written against a simulation RNG: openraft's election timeouts and the upload
//! ids use `rand::thread_rng()` (seeded by the `getrandom` crate, which calls
//! `syscall(SYS_getrandom, …)`), std's `HashMap` keys come from libc's `getrandom`, and tokio
//! derives each runtime's RNG (which orders `select!` branches) from std's `RandomState`. This
//! module interposes those two libc symbols in any executable that links the simulation: on a
//! thread where [`seed_thread`] installed a seeded generator they answer from it, everywhere else
//! (and for every other system call) they forward to the C library.
//!
//! The same `syscall` interposer also tells [`crate::lockstep`] when the simulation thread parks.
//!
//! Limits: tokio also mixes a process-global counter into each runtime's seed, so one seed replays
//! bit for bit only in a fresh process, which is why sweeps run every seed in its own process.
//! Threads other than the simulation thread (tokio's blocking pool, rocksdb's workers) keep real
//! randomness; none of their randomness reaches the observable behaviour. The interposition is
//! built for Linux on x86_64 and aarch64, where a variadic call passes its integer arguments
//! exactly like a six-argument one; elsewhere [`seed_thread`] reports that it could not seed.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Whether this build can make the process randomness deterministic.
pub const SUPPORTED: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// From now on, randomness requested on this thread comes from a generator seeded with `seed`.
/// Call it first thing on a fresh thread (std seeds its `HashMap` keys once per thread). Returns
/// whether the interposition is active in this build.
pub fn seed_thread(seed: u64) -> bool {
    SEEDED.with(|s| *s.borrow_mut() = Some(StdRng::seed_from_u64(seed ^ 0x6b65_656c_736f_6e00)));
    SUPPORTED
}

/// Fills `len` bytes at `buf` from this thread's seeded generator; false when there is none.
fn fill_seeded(buf: *mut u8, len: usize) -> bool {
    SEEDED
        .try_with(|s| match s.try_borrow_mut() {
            Ok(mut guard) => match guard.as_mut() {
                Some(rng) => {
                    if len > 0 && !buf.is_null() {
                        // SAFETY: the caller (getrandom(2)'s contract) hands a writable buffer
                        // of `len` bytes.
                        let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
                        rng.fill_bytes(out);
                    }
                    true
                }
                None => false,
            },
            Err(_) => false,
        })
        .unwrap_or(false)
}

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod interpose {
    use std::sync::OnceLock;

    use libc::c_long;

    type RawSyscall = unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;

    /// The C library's `syscall`, found behind this executable's definition.
    fn real_syscall() -> Option<RawSyscall> {
        static REAL: OnceLock<usize> = OnceLock::new();
        // SAFETY: dlsym with a valid NUL-terminated name; RTLD_NEXT skips this executable.
        let ptr = *REAL.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) as usize });
        if ptr == 0 {
            None
        } else {
            // SAFETY: `syscall` takes a number and up to six integer-class arguments; passing
            // all six to the variadic function is what every caller of it does.
            Some(unsafe { std::mem::transmute::<usize, RawSyscall>(ptr) })
        }
    }

    fn forward(n: c_long, a: [c_long; 6]) -> c_long {
        match real_syscall() {
            // SAFETY: forwards the caller's arguments unchanged.
            Some(f) => unsafe { f(n, a[0], a[1], a[2], a[3], a[4], a[5]) },
            None => {
                // SAFETY: errno is thread-local and always writable.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                -1
            }
        }
    }

    /// `syscall(2)`: `getrandom` on a seeded thread is answered here, everything else forwarded.
    ///
    /// # Safety
    /// Same contract as the C library's `syscall`.
    #[no_mangle]
    pub unsafe extern "C" fn syscall(
        n: c_long,
        a1: c_long,
        a2: c_long,
        a3: c_long,
        a4: c_long,
        a5: c_long,
        a6: c_long,
    ) -> c_long {
        if n == libc::SYS_getrandom && super::fill_seeded(a1 as *mut u8, a2 as usize) {
            return a2;
        }
        let cmd = a2 & 0x7f;
        // A wake-up by the simulation thread: let the woken threads finish reacting before it
        // goes on (see `crate::lockstep`).
        if n == libc::SYS_futex
            && matches!(
                cmd as i32,
                libc::FUTEX_WAKE
                    | libc::FUTEX_WAKE_BITSET
                    | libc::FUTEX_WAKE_OP
                    | libc::FUTEX_REQUEUE
                    | libc::FUTEX_CMP_REQUEUE
            )
            && crate::lockstep::on_sim_thread()
        {
            return crate::lockstep::wake(|| forward(n, [a1, a2, a3, a4, a5, a6]));
        }
        forward(n, [a1, a2, a3, a4, a5, a6])
    }

    type RawPthreadCreate = unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        *mut libc::c_void,
    ) -> libc::c_int;

    /// `pthread_create(3)`: a thread started by the simulation thread (tokio's blocking pool
    /// growing) runs until it parks before the simulation thread goes on.
    ///
    /// # Safety
    /// Same contract as the C library's `pthread_create`.
    #[no_mangle]
    pub unsafe extern "C" fn pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        arg: *mut libc::c_void,
    ) -> libc::c_int {
        static REAL: OnceLock<usize> = OnceLock::new();
        // SAFETY: dlsym with a valid NUL-terminated name; RTLD_NEXT skips this executable.
        let ptr = *REAL.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) as usize });
        if ptr == 0 {
            return libc::EAGAIN;
        }
        // SAFETY: the C library's pthread_create, called with the caller's arguments.
        let real = unsafe { std::mem::transmute::<usize, RawPthreadCreate>(ptr) };
        if crate::lockstep::on_sim_thread() {
            crate::lockstep::spawn(|| unsafe { real(thread, attr, start, arg) })
        } else {
            unsafe { real(thread, attr, start, arg) }
        }
    }

    type RawClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

    /// `clock_gettime(3)`: `CLOCK_MONOTONIC` on the simulation thread is simulated time (see
    /// `crate::lockstep::virtual_now`); everything else is the real clock.
    ///
    /// # Safety
    /// Same contract as the C library's `clock_gettime`.
    #[no_mangle]
    pub unsafe extern "C" fn clock_gettime(clock: libc::clockid_t, tp: *mut libc::timespec) -> libc::c_int {
        if clock == libc::CLOCK_MONOTONIC && !tp.is_null() {
            if let Some(now) = crate::lockstep::virtual_now() {
                // SAFETY: the caller hands a writable timespec.
                unsafe {
                    (*tp).tv_sec = now.as_secs() as libc::time_t;
                    (*tp).tv_nsec = now.subsec_nanos() as libc::c_long;
                }
                return 0;
            }
        }
        static REAL: OnceLock<usize> = OnceLock::new();
        // SAFETY: dlsym with a valid NUL-terminated name; RTLD_NEXT skips this executable.
        let ptr = *REAL.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"clock_gettime".as_ptr()) as usize });
        if ptr == 0 {
            // SAFETY: the raw system call with the caller's arguments.
            return unsafe { libc::syscall(libc::SYS_clock_gettime, clock, tp) as libc::c_int };
        }
        // SAFETY: the C library's clock_gettime with the caller's arguments.
        unsafe { std::mem::transmute::<usize, RawClockGettime>(ptr)(clock, tp) }
    }

    /// `getrandom(3)`: answered from the seeded generator on a seeded thread.
    ///
    /// # Safety
    /// Same contract as the C library's `getrandom`.
    #[no_mangle]
    pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, flags: u32) -> isize {
        if super::fill_seeded(buf, len) {
            return len as isize;
        }
        forward(
            libc::SYS_getrandom,
            [buf as c_long, len as c_long, flags as c_long, 0, 0, 0],
        ) as isize
    }
}

/// Keeps the interposed symbols in the link even if nothing else refers to this module.
pub fn anchor() -> usize {
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        interpose::syscall as *const () as usize
            ^ interpose::getrandom as *const () as usize
            ^ interpose::pthread_create as *const () as usize
            ^ interpose::clock_gettime as *const () as usize
    }
    #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    fn draw(seed: u64) -> (Vec<u64>, Vec<u32>) {
        std::thread::spawn(move || {
            super::seed_thread(seed);
            let r = (0..4).map(|_| rand::thread_rng().gen::<u64>()).collect();
            let m: std::collections::HashMap<u32, ()> = (0..32).map(|i| (i, ())).collect();
            (r, m.keys().copied().collect())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn seeded_threads_repeat() {
        if !super::SUPPORTED {
            return;
        }
        super::anchor();
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }
}
