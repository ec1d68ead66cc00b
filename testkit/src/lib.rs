//! Test support shared by Kelp's crate tests and its end-to-end suite.
//!
//! Tests never assert timing with a fixed sleep ("after 100 ms the flush has happened"): on a
//! loaded 2-core CI machine any fixed delay is either too short (a flaky failure) or wastes time.
//! They poll a condition under a generous deadline instead, with [`eventually`] for conditions a
//! closure can read directly and [`eventually_async`] for conditions that need an `.await` (an
//! HTTP request, a metric scrape).
//!
//! [`etcd::Etcd`] runs a real etcd on ephemeral ports for the tests of the filer's etcd store
//! and of `common::etcd`.
#![deny(missing_docs)]

pub mod etcd;

use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often the condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `cond` holds, polling every 10 ms; panics naming `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the async condition `cond` yields `Some(value)`, polling every 10 ms, and returns
/// the value; panics naming `what` (and the last state `cond` reported through `last`) after
/// `timeout`.
pub async fn eventually_async<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = cond().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn test_eventually_returns_once_the_condition_holds() {
        let n = AtomicU32::new(0);
        eventually("three polls", || n.fetch_add(1, Ordering::SeqCst) >= 3).await;
        assert!(n.load(Ordering::SeqCst) >= 4);
        let v = eventually_async("a value", Duration::from_secs(1), || {
            let k = n.fetch_add(1, Ordering::SeqCst);
            async move { (k >= 6).then_some(k) }
        })
        .await;
        assert!(v >= 6);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for never")]
    async fn test_eventually_async_fails_after_the_timeout() {
        eventually_async("never", Duration::from_millis(50), || async { None::<()> }).await;
    }
}
