//! Per-caller rate limits: one token bucket per caller (client-certificate fingerprint, token
//! user id, or, for anonymous callers, the remote IP address).
//!
//! A bucket holds up to `burst` tokens and refills at `rate` per second; a request takes one
//! token or is refused with the time until the next token (the 429's `Retry-After`). The
//! table of buckets is bounded: when it is full, buckets that have refilled completely carry
//! no information and are dropped first, so a flood of new identities cannot grow memory
//! without bound (at worst it resets idle callers' buckets, which only ever favours them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most callers tracked at once.
const MAX_CALLERS: usize = 100_000;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once (0: same as `rate`).
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        let burst = if burst == 0 { rate } else { burst };
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `caller`, or says how long until one is available.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        if buckets.len() >= MAX_CALLERS {
            // Everyone is active: forget an arbitrary half rather than grow.
            let drop: Vec<String> = buckets.keys().take(MAX_CALLERS / 2).cloned().collect();
            for k in drop {
                buckets.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("a", t0).is_ok());
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // Another caller has its own bucket.
        assert!(limiter.check("b", t0).is_ok());
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check("a", t1).is_ok());
        assert!(limiter.check("a", t1).is_err());
        // After a long pause the bucket is full again, not more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check("a", t2).is_ok());
        }
        assert!(limiter.check("a", t2).is_err());
    }

    #[test]
    fn table_stays_bounded() {
        let limiter = RateLimiter::new(1000, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_CALLERS + 10) {
            let _ = limiter.check(&i.to_string(), t0);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_CALLERS);
    }
}
