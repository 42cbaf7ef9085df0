//! Request rate limits and the back-off of failed logins: one owner for everything that answers
//! 429 TOOMANYREQUESTS because a caller asked too often.
//!
//! Rates are token buckets (governor's GCRA) per user and per source address, on this node
//! (every node limits what it serves; behind a balancer spreading over N nodes a user gets up to
//! N times the rate). A tenancy's own `requests_per_second` (set by the cluster administrator
//! with its other limits) replaces the node default for that tenancy's users; the tenancy's
//! setting is re-read from the catalog at most once a second, so the hot path stays a hash
//! lookup.
//!
//! Failed logins (a wrong password on `/token` or in Basic auth) are counted per user name and
//! per source address: after [`FREE_FAILURES`] for a user (or [`FREE_FAILURES_PER_ADDRESS`]
//! from an address, where many users may sit behind one NAT) the next attempt must wait 1 s,
//! then 2 s, 4 s, … up to [`MAX_BACKOFF`], and until then every attempt is refused before its
//! password is looked at. A success clears the user's count. Loopback sources are not counted
//! by address: they are this host's own tools or a balancer on it, whose address every client
//! would share. Guessing a 32-character token online is hopeless this way.
//!
//! All of it runs on the node's clock, so tests move time instead of waiting for it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::error::{ApiError, ErrorCode};
use crate::registry::Clock;

/// Failed logins allowed for one user before the back-off starts.
pub const FREE_FAILURES: u32 = 5;
/// Failed logins allowed from one address before the back-off starts.
pub const FREE_FAILURES_PER_ADDRESS: u32 = 20;
/// The longest a user or address is made to wait after failed logins.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Callers whose failures are remembered at once; the oldest are forgotten beyond this.
const MAX_TRACKED_FAILURES: usize = 100_000;
/// How often a tenancy's configured rate is re-read from the catalog.
const TENANCY_REFRESH_MS: u64 = 1000;

/// The node's clock as governor reads it.
#[derive(Clone)]
struct NodeClock(Arc<dyn Clock>);

impl governor::clock::Clock for NodeClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

type Limiter<K> = RateLimiter<K, DashMapStateStore<K>, NodeClock, governor::middleware::NoOpMiddleware<Duration>>;

/// Requests per second and the burst a bucket holds (twice the rate, at least one).
fn quota(per_second: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// One tenancy's per-user buckets, with the rate they were built for.
struct TenancyBuckets {
    per_second: u32,
    checked_ms: u64,
    limiter: Option<Arc<Limiter<String>>>,
}

/// Configured rates of this node.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateSettings {
    /// Requests per second per user (0: unlimited), unless the user's tenancy sets its own.
    pub per_user: u32,
    /// Requests per second per source address (0: unlimited).
    pub per_address: u32,
}

/// The rate limits and login back-off of this node.
pub struct RateLimits {
    clock: NodeClock,
    settings: RateSettings,
    per_address: Option<Limiter<IpAddr>>,
    default_users: Option<Arc<Limiter<String>>>,
    tenancies: Mutex<HashMap<String, TenancyBuckets>>,
    failures: LoginFailures,
}

impl RateLimits {
    pub fn new(settings: RateSettings, clock: Arc<dyn Clock>) -> RateLimits {
        let clock = NodeClock(clock);
        RateLimits {
            per_address: quota(settings.per_address).map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            default_users: quota(settings.per_user)
                .map(|q| Arc::new(RateLimiter::dashmap_with_clock(q, clock.clone()))),
            tenancies: Mutex::new(HashMap::new()),
            failures: LoginFailures::default(),
            settings,
            clock,
        }
    }

    /// Takes one request from the source address's bucket.
    pub fn admit_address(&self, remote: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(ip)) = (&self.per_address, remote) else {
            return Ok(());
        };
        check(limiter, &ip, &self.clock, "requests from this address")
    }

    /// Takes one request from `subject`'s bucket; `tenancy` is the user's tenancy (`None` for
    /// the cluster administrator and anonymous callers, who get the node default), and
    /// `tenancy_rate` reads that tenancy's configured rate (`None`: the node default) when it is
    /// due to be checked again.
    pub fn admit_user(
        &self,
        subject: &str,
        tenancy: Option<&str>,
        tenancy_rate: impl FnOnce() -> Option<u32>,
    ) -> Result<(), ApiError> {
        let limiter = match tenancy {
            None => self.default_users.clone(),
            Some(ns) => self.tenancy_limiter(ns, tenancy_rate),
        };
        match limiter {
            None => Ok(()),
            Some(limiter) => check(&limiter, &subject.to_string(), &self.clock, "requests by this user"),
        }
    }

    fn tenancy_limiter(&self, ns: &str, rate: impl FnOnce() -> Option<u32>) -> Option<Arc<Limiter<String>>> {
        let now = self.clock.0.now_ms();
        let mut tenancies = self.tenancies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = tenancies.get(ns) {
            if now.saturating_sub(b.checked_ms) < TENANCY_REFRESH_MS {
                return b.limiter.clone();
            }
        }
        let per_second = rate().unwrap_or(self.settings.per_user);
        let buckets = tenancies.entry(ns.to_string()).or_insert(TenancyBuckets {
            per_second: u32::MAX,
            checked_ms: now,
            limiter: None,
        });
        buckets.checked_ms = now;
        if buckets.per_second != per_second {
            buckets.per_second = per_second;
            buckets.limiter =
                quota(per_second).map(|q| Arc::new(RateLimiter::dashmap_with_clock(q, self.clock.clone())));
        }
        buckets.limiter.clone()
    }

    /// Refuses a login attempt by `user` from `remote` while either is backing off.
    pub fn admit_login(&self, user: &str, remote: Option<IpAddr>) -> Result<(), ApiError> {
        let now = self.clock.0.now_ms();
        let address = remote.filter(|ip| !ip.is_loopback()).map(FailureKey::Address);
        let wait = [Some(FailureKey::User(user.to_string())), address]
            .into_iter()
            .flatten()
            .map(|k| self.failures.wait_ms(&k, now))
            .max()
            .unwrap_or(0);
        match wait {
            0 => Ok(()),
            ms => Err(too_many(
                "too many failed logins; wait before trying again",
                Duration::from_millis(ms),
            )),
        }
    }

    /// Records the outcome of a login attempt.
    pub fn login_result(&self, user: &str, remote: Option<IpAddr>, succeeded: bool) {
        let now = self.clock.0.now_ms();
        let user = FailureKey::User(user.to_string());
        if succeeded {
            self.failures.clear(&user);
            return;
        }
        self.failures.fail(user, now);
        if let Some(ip) = remote.filter(|ip| !ip.is_loopback()) {
            self.failures.fail(FailureKey::Address(ip), now);
        }
    }

    /// Forgets buckets that are full again (idle callers), so the maps hold only recent ones.
    pub fn shrink(&self) {
        if let Some(l) = &self.per_address {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.default_users {
            l.retain_recent();
        }
        let tenancies = self.tenancies.lock().unwrap_or_else(|p| p.into_inner());
        for b in tenancies.values() {
            if let Some(l) = &b.limiter {
                l.retain_recent();
            }
        }
    }
}

fn check<K: Hash + Eq + Clone>(limiter: &Limiter<K>, key: &K, clock: &NodeClock, what: &str) -> Result<(), ApiError> {
    use governor::clock::Clock as _;
    limiter.check_key(key).map_err(|not_until| {
        too_many(
            &format!("{what} exceed the rate limit"),
            not_until.wait_time_from(clock.now()),
        )
    })
}

/// 429 TOOMANYREQUESTS with `Retry-After` in whole seconds (at least 1).
fn too_many(message: &str, wait: Duration) -> ApiError {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    ApiError::new(ErrorCode::TooManyRequests, message).with_header("Retry-After", secs.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    User(String),
    Address(IpAddr),
}

impl FailureKey {
    fn free_failures(&self) -> u32 {
        match self {
            FailureKey::User(_) => FREE_FAILURES,
            FailureKey::Address(_) => FREE_FAILURES_PER_ADDRESS,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
}

impl Failures {
    /// When the next attempt may be made, after `free` failures without a wait.
    fn allowed_at_ms(&self, free: u32) -> u64 {
        if self.count < free {
            return 0;
        }
        let doublings = (self.count - free).min(16);
        let backoff = (1000u64 << doublings).min(MAX_BACKOFF.as_millis() as u64);
        self.last_ms.saturating_add(backoff)
    }
}

/// Failed logins by user and by address, bounded in size.
#[derive(Default)]
struct LoginFailures {
    map: Mutex<HashMap<FailureKey, Failures>>,
    /// Whether the map holds anything: every Basic-authenticated request asks, and the answer
    /// is almost always no, which this tells without taking the lock.
    any: std::sync::atomic::AtomicBool,
}

impl LoginFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FailureKey, Failures>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_empty(&self) -> bool {
        !self.any.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn wait_ms(&self, key: &FailureKey, now: u64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        self.lock()
            .get(key)
            .map_or(0, |f| f.allowed_at_ms(key.free_failures()).saturating_sub(now))
    }

    fn fail(&self, key: FailureKey, now: u64) {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED_FAILURES && !map.contains_key(&key) {
            // Forget whoever failed longest ago (and is no longer waiting) to make room.
            let forget = MAX_BACKOFF.as_millis() as u64;
            map.retain(|_, f| now.saturating_sub(f.last_ms) < forget);
            if map.len() >= MAX_TRACKED_FAILURES {
                if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last_ms).map(|(k, _)| k.clone()) {
                    map.remove(&oldest);
                }
            }
        }
        let f = map.entry(key).or_insert(Failures { count: 0, last_ms: now });
        f.count = f.count.saturating_add(1);
        f.last_ms = now;
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn clear(&self, key: &FailureKey) {
        if self.is_empty() {
            return;
        }
        let mut map = self.lock();
        map.remove(key);
        self.any.store(!map.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock that stands still until a test moves it.
    #[derive(Default)]
    struct ManualClock(AtomicU64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }

        fn set_offset_ms(&self, ms: u64) -> bool {
            self.0.store(ms, Ordering::SeqCst);
            true
        }
    }

    fn limits(settings: RateSettings) -> (RateLimits, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (RateLimits::new(settings, clock.clone()), clock)
    }

    #[test]
    fn a_burst_over_the_rate_is_refused_until_the_clock_moves() {
        let (l, clock) = limits(RateSettings {
            per_user: 5,
            per_address: 0,
        });
        clock.set_offset_ms(1_000_000);
        let admitted = (0..100)
            .filter(|_| l.admit_user("demo/ann", None, || None).is_ok())
            .count();
        assert_eq!(admitted, 10, "the burst is twice the rate");
        let refused = l.admit_user("demo/ann", None, || None).unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        assert_eq!(
            refused.headers.iter().find(|(n, _)| *n == "Retry-After").unwrap().1,
            "1"
        );
        // Someone else is not affected.
        assert!(l.admit_user("demo/bob", None, || None).is_ok());
        clock.set_offset_ms(1_000_200);
        assert!(l.admit_user("demo/ann", None, || None).is_ok());
    }

    #[test]
    fn a_tenancy_rate_replaces_the_node_default() {
        let (l, clock) = limits(RateSettings::default());
        clock.set_offset_ms(5_000);
        assert!((0..1000).all(|_| l.admit_user("free/u", Some("free"), || None).is_ok()));
        let admitted = (0..100)
            .filter(|_| l.admit_user("tight/u", Some("tight"), || Some(1)).is_ok())
            .count();
        assert_eq!(admitted, 2);
    }

    #[test]
    fn failed_logins_back_off_exponentially_and_success_clears() {
        let (l, clock) = limits(RateSettings::default());
        clock.set_offset_ms(10_000);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(l.admit_login("demo/ann", Some(ip)).is_ok());
            l.login_result("demo/ann", Some(ip), false);
        }
        let first = l.admit_login("demo/ann", Some(ip)).unwrap_err();
        assert_eq!(first.headers[0].1, "1");
        // Others from that address may still try, until the address has failed too often.
        assert!(l.admit_login("demo/bob", Some(ip)).is_ok());
        for _ in FREE_FAILURES..FREE_FAILURES_PER_ADDRESS {
            l.login_result("demo/bob", Some(ip), false);
        }
        assert!(l.admit_login("demo/carol", Some(ip)).is_err());
        // Loopback is never counted by address.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..50 {
            l.login_result(&format!("x{}", rand::random::<u32>()), Some(lo), false);
        }
        assert!(l.admit_login("demo/dave", Some(lo)).is_ok());
        clock.set_offset_ms(11_000);
        assert!(l.admit_login("demo/ann", None).is_ok());
        l.login_result("demo/ann", None, false);
        let second = l.admit_login("demo/ann", None).unwrap_err();
        assert_eq!(second.headers[0].1, "2");
        for _ in 0..20 {
            l.login_result("demo/ann", None, false);
        }
        let capped = l.admit_login("demo/ann", None).unwrap_err();
        assert_eq!(capped.headers[0].1, MAX_BACKOFF.as_secs().to_string());
        l.login_result("demo/ann", None, true);
        assert!(l.admit_login("demo/ann", None).is_ok());
    }
}
