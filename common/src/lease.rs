//! A lease in the filer: which one of several instances of a service is the active one (the
//! *writer*), and whom the others forward to or redirect to.
//!
//! The lease is a filer entry whose `extended` holds `holder` (the writer's URL), `expires_ms`
//! (wall clock) and `epoch` (bumped on every takeover). Every instance runs [`run_lease`]: it
//! renews the lease while it holds it, takes it over with a version precondition once it has
//! expired (so two instances cannot both take it), and otherwise remembers the holder. An
//! instance that finds its own URL as the holder (it restarted before its lease ran out)
//! renews it at once rather than wait.
//!
//! The writer counts itself the writer only until `renewal sent + ttl - ttl/5` on its own
//! monotonic clock, so it stops writing before another instance, judging by `expires_ms`, may
//! take over (clocks skewed by less than `ttl/5`). What the writer writes must still be fenced
//! where it lands (the registry's ids, the broker's partition epochs): a writer paused longer
//! than that between its last check and its write could otherwise race a new writer.
//!
//! Users: the schema registry (`registry::leader`) and the broker (its active/standby lease).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::filer::{Entry, Expect};
use crate::client::filer::FilerClient;
use crate::sync::LockExt;
use crate::time::now_ms;
use tokio_util::sync::CancellationToken;

/// This instance's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It writes (until its lease lapses).
    Writer,
    /// It forwards writes to the holder, when known.
    Follower(Option<String>),
}

#[derive(Debug)]
struct State {
    role: Role,
    /// `None`: writer without a lease (single instance).
    valid_until: Option<Instant>,
    epoch: u64,
}

/// The lease state of this instance.
#[derive(Debug)]
pub struct Leadership {
    me: String,
    /// More attributes written into the lease entry (e.g. a broker's Kafka address).
    attrs: std::collections::BTreeMap<String, String>,
    state: Mutex<State>,
}

impl Leadership {
    /// The only writer (no lease).
    pub fn single(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            attrs: Default::default(),
            state: Mutex::new(State {
                role: Role::Writer,
                valid_until: None,
                epoch: 0,
            }),
        }
    }

    /// A follower until [`run_lease`] takes the lease.
    pub fn contender(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            attrs: Default::default(),
            state: Mutex::new(State {
                role: Role::Follower(None),
                valid_until: Some(Instant::now()),
                epoch: 0,
            }),
        }
    }

    /// A follower of a fixed writer at `writer` (no lease: for tests and static set-ups).
    pub fn following(me: &str, writer: &str) -> Self {
        Self {
            me: me.to_owned(),
            attrs: Default::default(),
            state: Mutex::new(State {
                role: Role::Follower(Some(writer.to_owned())),
                valid_until: None,
                epoch: 0,
            }),
        }
    }

    /// Also writes `key = value` into the lease entry while this instance holds it.
    pub fn with_attr(mut self, key: &str, value: &str) -> Self {
        self.attrs.insert(key.to_owned(), value.to_owned());
        self
    }

    /// This instance's URL.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The current role (a writer whose lease lapsed is a follower of nobody known).
    pub fn role(&self) -> Role {
        let st = self.state.lock_or_abort();
        match (&st.role, st.valid_until) {
            (Role::Writer, Some(until)) if Instant::now() >= until => Role::Follower(None),
            (r, _) => r.clone(),
        }
    }

    /// Whether this instance may write now.
    pub fn is_writer(&self) -> bool {
        self.role() == Role::Writer
    }

    /// The lease epoch this instance last held or saw.
    pub fn epoch(&self) -> u64 {
        self.state.lock_or_abort().epoch
    }

    fn set(&self, role: Role, valid_until: Option<Instant>, epoch: u64) {
        let mut st = self.state.lock_or_abort();
        if st.role != role {
            tracing::info!(?role, epoch, "lease role changed");
        }
        st.role = role;
        st.valid_until = valid_until;
        st.epoch = epoch;
    }
}

fn lease_entry(l: &Leadership, path: &str, expires_ms: u64, epoch: u64) -> Entry {
    let mut e = Entry {
        full_path: path.to_owned(),
        mode: 0o644,
        mtime_ms: now_ms(),
        ..Entry::default()
    };
    e.extended.extend(l.attrs.clone());
    e.extended.insert("holder".into(), l.me.clone());
    e.extended
        .insert("expires_ms".into(), expires_ms.to_string());
    e.extended.insert("epoch".into(), epoch.to_string());
    e
}

/// One round: read the lease and renew, take over or follow it.
async fn round(l: &Leadership, filer: &FilerClient, path: &str, ttl: Duration) {
    let started = Instant::now();
    let ttl_ms = ttl.as_millis() as u64;
    let held_until = started + ttl - ttl / 5;
    let current = match filer.get_entry(path).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(lease = %path, "failed to read the lease: {e}");
            return;
        }
    };
    let (expect, epoch) = match &current {
        None => (Expect::Absent, 1),
        Some(e) => {
            let holder = e.extended.get("holder").cloned().unwrap_or_default();
            let expires: u64 = e
                .extended
                .get("expires_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let epoch: u64 = e
                .extended
                .get("epoch")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if holder == l.me {
                (Expect::Version(e.version), epoch)
            } else if expires <= now_ms() {
                tracing::info!(lease = %path, previous = %holder, "the lease expired; taking it over");
                (Expect::Version(e.version), epoch + 1)
            } else {
                l.set(Role::Follower(Some(holder)), None, epoch);
                return;
            }
        }
    };
    let entry = lease_entry(l, path, now_ms() + ttl_ms, epoch);
    match filer.put_entry(&entry, Some(expect)).await {
        Ok(_) => {
            tracing::debug!(lease = %path, took = ?started.elapsed(), "lease renewed");
            l.set(Role::Writer, Some(held_until), epoch)
        }
        // Another instance won the race (or our own retried write landed): look again next
        // round; meanwhile a lease we held lapses on its own.
        Err(e) => tracing::info!(lease = %path, "the lease was not written: {e}"),
    }
}

/// Keeps the lease (or follows its holder) until `stop`; then gives it up if held.
pub async fn run_lease(
    l: std::sync::Arc<Leadership>,
    filer: FilerClient,
    path: String,
    ttl: Duration,
    stop: CancellationToken,
) {
    loop {
        round(&l, &filer, &path, ttl).await;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(ttl / 4) => {}
        }
    }
    // Hand over at once: expire our lease so a follower takes it without waiting a full ttl.
    if l.is_writer()
        && let Ok(Some(e)) = filer.get_entry(&path).await
        && e.extended.get("holder").map(String::as_str) == Some(l.me.as_str())
    {
        let epoch = l.epoch();
        let entry = lease_entry(&l, &path, 0, epoch);
        let _ = filer
            .put_entry(&entry, Some(Expect::Version(e.version)))
            .await;
        l.set(Role::Follower(None), None, epoch);
        tracing::info!(lease = %path, "lease released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_leadership_lapses_without_renewal() {
        let l = Leadership::contender("http://a");
        assert_eq!(l.role(), Role::Follower(None));
        l.set(
            Role::Writer,
            Some(Instant::now() + Duration::from_secs(60)),
            1,
        );
        assert!(l.is_writer());
        l.set(Role::Writer, Some(Instant::now()), 1);
        assert!(!l.is_writer());
        assert!(Leadership::single("http://a").is_writer());
        l.set(Role::Follower(Some("http://b".into())), None, 2);
        assert_eq!(l.role(), Role::Follower(Some("http://b".into())));
    }
}
