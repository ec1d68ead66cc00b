//! Leader election among masters on etcd (`--etcd-endpoints`), and what a master knows of it.
//!
//! # The lease
//! Every master campaigns for the key `<prefix>leader`: it grants a lease of `--leader-ttl-secs`
//! and creates the key, holding its advertised address and attached to the lease, in a
//! transaction that requires the key to be absent. The winner's *term* is the key's create
//! revision; it loads the id sequencer from etcd (see [`crate::state`], whose writes require
//! the leader key to still be that term's) and renews the lease every third of its TTL, each
//! time checking that the leader key is still its term's. It steps down when a renewal finds
//! the lease or the key gone, or when none has succeeded for two thirds of the TTL since the
//! last one was sent (each renewal is cut off at that deadline): before etcd can expire the
//! lease, so a partitioned leader stops first, as a rule; the state's compare keeps ids unique
//! even when it does not. A master that stops revokes its lease, so a standby takes over at
//! once rather than after the TTL.
//!
//! Standbys read the leader key every third of the TTL, and campaign when it is gone. A
//! master restarted faster than its old lease expired finds its own address in the key: that
//! term is its dead predecessor's, so it deletes the key (guarded by its create revision) and
//! campaigns at once. So every master needs its own `--advertise` address.
//!
//! # What followers answer
//! [`Leadership`] is the shared view: [`Role::Alone`] without etcd (the single-master default),
//! [`Role::Leader`], or [`Role::Follower`] with the leader's address when one is known. The
//! HTTP layer redirects a follower's API requests to the leader (307, same path and query)
//! and answers 503 `no_leader` while none is known; heartbeats are accepted by every master,
//! so a standby's topology is warm when it takes over.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::etcd::{Compare, DeleteRangeRequest, EtcdClient, PutRequest, TxnOp, TxnRequest};
use common::sync::LockExt;
use tokio_util::sync::CancellationToken;

use crate::service::Master;
use crate::state::{EtcdTerm, Sequencer};

/// This master's part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No election: the only master (no `--etcd-endpoints`).
    Alone,
    /// The elected leader.
    Leader,
    /// A standby; the leader's address when one is known.
    Follower {
        /// The leader's advertised `host:port`.
        leader: Option<String>,
    },
}

/// What this master knows of the election (shared by the election loop and the routes).
#[derive(Debug)]
pub struct Leadership {
    me: String,
    role: RwLock<Role>,
}

impl Leadership {
    /// A master that is the only one.
    pub fn alone(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            role: RwLock::new(Role::Alone),
        }
    }

    /// A master in an election, a follower until it wins.
    pub fn electing(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            role: RwLock::new(Role::Follower { leader: None }),
        }
    }

    /// This master's advertised address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.read_or_abort().clone()
    }

    /// Whether this master may hand out ids now.
    pub fn leads(&self) -> bool {
        matches!(self.role(), Role::Alone | Role::Leader)
    }

    /// The leader's address: this master's when it leads.
    pub fn leader(&self) -> Option<String> {
        match self.role() {
            Role::Alone | Role::Leader => Some(self.me.clone()),
            Role::Follower { leader } => leader,
        }
    }

    pub(crate) fn set(&self, role: Role) {
        let mut r = self.role.write_or_abort();
        if *r != role {
            tracing::info!(from = ?*r, to = ?role, "master role changed");
            *r = role;
        }
    }
}

/// How the election runs.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The etcd client.
    pub client: Arc<EtcdClient>,
    /// Key prefix of this cluster's masters (`<prefix>leader`, `<prefix>state`).
    pub prefix: String,
    /// The leader lease's time to live.
    pub ttl: Duration,
    /// The state this master kept before HA (`<dir>/master.state`), a floor for its first term.
    pub local_floor: crate::state::Persisted,
}

impl ElectionConfig {
    fn leader_key(&self) -> Vec<u8> {
        format!("{}leader", self.prefix).into_bytes()
    }

    fn state_key(&self) -> Vec<u8> {
        format!("{}state", self.prefix).into_bytes()
    }

    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(1) as i64
    }
}

/// What a campaign found.
enum Campaign {
    /// This master created the leader key: its lease, its term, and when the lease was asked
    /// for (the lease runs from then at the latest).
    Won {
        lease: i64,
        term: i64,
        granted: Instant,
    },
    /// Another master leads.
    Lost { leader: String },
}

/// Runs the election until `shutdown`: campaigns, leads (handing `master` its sequencer) and
/// steps down as the module doc says; revokes the lease on the way out.
pub async fn run(master: Arc<Master>, cfg: ElectionConfig, shutdown: CancellationToken) {
    let leadership = master.leadership().clone();
    let poll = cfg.ttl / 3;
    let mut failing_since: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        match campaign(&cfg, leadership.me()).await {
            Ok(Campaign::Won {
                lease,
                term,
                granted,
            }) => {
                failing_since = None;
                // No longer pointing at the previous leader, not yet handing out ids.
                leadership.set(Role::Follower { leader: None });
                lead(&master, &cfg, lease, term, granted, &shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
            Ok(Campaign::Lost { leader }) => {
                failing_since = None;
                leadership.set(Role::Follower {
                    leader: Some(leader),
                });
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                // A leader known a moment ago is likely still the leader; after a TTL without
                // etcd it may not be, and a redirect to it would mislead.
                if since.elapsed() > cfg.ttl {
                    leadership.set(Role::Follower { leader: None });
                }
                tracing::warn!(error = %e, "leader election: etcd unreachable; will keep trying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Reads the leader key, and creates it (with a fresh lease) when absent.
async fn campaign(cfg: &ElectionConfig, me: &str) -> anyhow::Result<Campaign> {
    let key = cfg.leader_key();
    if let Some(kv) = cfg.client.get(key.clone()).await? {
        let leader = String::from_utf8_lossy(&kv.value).into_owned();
        if leader != me {
            return Ok(Campaign::Lost { leader });
        }
        // Our own address in a term we do not hold: a predecessor of this master that died
        // before its lease ran out. Remove its key, unless someone replaced it meanwhile.
        tracing::info!(
            term = kv.create_revision,
            "removing the leader key of this master's previous run"
        );
        cfg.client
            .txn(&TxnRequest {
                compare: vec![Compare::new(
                    key.clone(),
                    common::etcd::CompareOp::Equal,
                    common::etcd::CompareTarget::CreateRevision(kv.create_revision),
                )],
                success: vec![TxnOp::DeleteRange(DeleteRangeRequest::key(key.clone()))],
                failure: Vec::new(),
            })
            .await?;
    }
    let granted = Instant::now();
    let lease = cfg.client.lease_grant(cfg.ttl_secs()).await?;
    let resp = cfg
        .client
        .txn(&TxnRequest {
            compare: vec![Compare::absent(key.clone())],
            success: vec![TxnOp::Put(
                PutRequest::new(key.clone(), me.as_bytes().to_vec()).with_lease(lease.id),
            )],
            failure: vec![TxnOp::Range(common::etcd::RangeRequest::key(key))],
        })
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            // Whether the put applied is unknown; the lease's expiry settles it either way.
            let _ = cfg.client.lease_revoke(lease.id).await;
            return Err(e.into());
        }
    };
    if resp.succeeded {
        return Ok(Campaign::Won {
            lease: lease.id,
            term: resp.header.revision,
            granted,
        });
    }
    let _ = cfg.client.lease_revoke(lease.id).await;
    let leader = resp
        .responses
        .into_iter()
        .find_map(|r| match r {
            common::etcd::TxnOpResponse::Range(r) => r.kvs.into_iter().next(),
            _ => None,
        })
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default();
    Ok(Campaign::Lost { leader })
}

/// Leads for one term: loads the sequencer, renews the lease until it is lost or `shutdown`,
/// then steps down and hands the lease back.
async fn lead(
    master: &Master,
    cfg: &ElectionConfig,
    lease: i64,
    term: i64,
    granted: Instant,
    shutdown: &CancellationToken,
) {
    let leadership = master.leadership();
    // What volume servers reported is applied by `Master::lead`, under its lock.
    let held = EtcdTerm {
        client: cfg.client.clone(),
        state_key: cfg.state_key(),
        leader_key: cfg.leader_key(),
        term,
    };
    let loaded = async {
        master
            .lead(Sequencer::load_etcd(held, cfg.local_floor).await?)
            .await
    };
    if let Err(e) = loaded.await {
        tracing::warn!(error = %format!("{e:#}"), "elected, but the id state could not be loaded; giving the term up");
        let _ = cfg.client.lease_revoke(lease).await;
        return;
    }
    leadership.set(Role::Leader);
    tracing::info!(term, me = leadership.me(), "elected leader");
    hold(cfg, lease, term, granted, shutdown).await;
    master.step_down().await;
    leadership.set(Role::Follower { leader: None });
    if let Err(e) = cfg.client.lease_revoke(lease).await {
        tracing::warn!(error = %e, "could not hand the leader lease back; a standby takes over when it expires");
    }
}

/// Renews the lease every third of the TTL while the leader key is still this term's; returns
/// when `shutdown` comes, the lease or the key is gone, or no renewal succeeded within two
/// thirds of the TTL since the last one was sent (each renewal is bounded by that deadline, so
/// a hung etcd cannot hold the leader past it).
async fn hold(
    cfg: &ElectionConfig,
    lease: i64,
    term: i64,
    granted: Instant,
    shutdown: &CancellationToken,
) {
    let renew_every = cfg.ttl / 3;
    let give_up_after = cfg.ttl * 2 / 3;
    let mut last_renewed = granted;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(renew_every) => {}
        }
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(last_renewed + give_up_after);
        let renewed = tokio::time::timeout_at(deadline, renew(cfg, lease, term)).await;
        match renewed {
            Ok(Ok(true)) => last_renewed = sent,
            Ok(Ok(false)) => {
                tracing::warn!(term, "the leader lease or key is gone; stepping down");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    term,
                    "the leader lease could not be renewed in time; stepping down"
                );
                return;
            }
            Ok(Err(e)) if last_renewed.elapsed() >= give_up_after => {
                tracing::warn!(term, error = %e, "the leader lease could not be renewed in time; stepping down");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(term, error = %e, "renewing the leader lease failed; retrying")
            }
        }
    }
}

/// Renews the lease once and checks that the leader key is still the one of `term`: `false`
/// when either is gone (expired, revoked, or the key deleted or replaced).
async fn renew(cfg: &ElectionConfig, lease: i64, term: i64) -> anyhow::Result<bool> {
    if cfg.client.lease_keepalive(lease).await?.is_none() {
        return Ok(false);
    }
    let key = cfg.client.get(cfg.leader_key()).await?;
    Ok(key.is_some_and(|kv| kv.create_revision == term && kv.lease == lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::test_master;
    use crate::state::Persisted;

    struct Candidate {
        master: Arc<Master>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    /// The election on `etcd` with a 2 s lease.
    fn config(etcd: &testkit::etcd::Etcd) -> ElectionConfig {
        config_with_ttl(etcd, Duration::from_secs(2))
    }

    fn config_with_ttl(etcd: &testkit::etcd::Etcd, ttl: Duration) -> ElectionConfig {
        common::tls::install_default_provider();
        let http = common::client::HttpClient::new(Duration::from_secs(1)).with_attempts(1);
        ElectionConfig {
            client: Arc::new(EtcdClient::new(&[etcd.endpoint().to_owned()], http).unwrap()),
            prefix: "/test/master/".to_owned(),
            ttl,
            local_floor: Persisted::default(),
        }
    }

    fn candidate(etcd: &testkit::etcd::Etcd, me: &str) -> Candidate {
        candidate_with(config(etcd), me)
    }

    fn candidate_with(cfg: ElectionConfig, me: &str) -> Candidate {
        let dir = tempfile::tempdir().unwrap();
        let (master, _) = test_master(dir.path(), Duration::from_secs(60), 1 << 30);
        let master =
            Arc::new(master.with_leadership(Arc::new(Leadership::electing(me.to_owned()))));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(master.clone(), cfg, stop.clone()));
        Candidate {
            master,
            stop,
            task,
            _dir: dir,
        }
    }

    /// Waits (up to `within`) until `c`'s role is `want`; returns how long it took.
    async fn until(c: &Candidate, want: Role, within: Duration) -> Duration {
        let start = Instant::now();
        while c.master.leadership().role() != want {
            assert!(
                start.elapsed() < within,
                "{} is {:?}, not {want:?}, after {within:?}",
                c.master.leadership().me(),
                c.master.leadership().role()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    /// One leader at a time: the first candidate leads, the second follows it; a stopped
    /// leader hands over at once: it revokes its lease, so with a 10 s TTL the standby leads
    /// within a poll (3.3 s) and a little, not after the TTL.
    #[tokio::test]
    async fn test_election_hands_over_at_once_on_stop() {
        let etcd = testkit::etcd::Etcd::start();
        let ttl = Duration::from_secs(10);
        let a = candidate_with(config_with_ttl(&etcd, ttl), "a:1");
        until(&a, Role::Leader, Duration::from_secs(10)).await;
        let b = candidate_with(config_with_ttl(&etcd, ttl), "b:1");
        let a_leads = Role::Follower {
            leader: Some("a:1".into()),
        };
        until(&b, a_leads, Duration::from_secs(10)).await;
        a.stop.cancel();
        a.task.await.unwrap();
        assert_eq!(
            a.master.leadership().role(),
            Role::Follower { leader: None }
        );
        let took = until(&b, Role::Leader, ttl).await;
        assert!(took < ttl / 2, "handover after a stop took {took:?}");
        b.stop.cancel();
        b.task.await.unwrap();
    }

    /// A crashed leader (its task gone, its lease left to expire) is replaced once the lease
    /// expires: within the TTL and a poll.
    #[tokio::test]
    async fn test_election_takes_over_from_a_crashed_leader() {
        let etcd = testkit::etcd::Etcd::start();
        let ttl = config(&etcd).ttl;
        let b = candidate(&etcd, "b:1");
        until(&b, Role::Leader, Duration::from_secs(10)).await;
        let c = candidate(&etcd, "c:1");
        until(
            &c,
            Role::Follower {
                leader: Some("b:1".into()),
            },
            Duration::from_secs(10),
        )
        .await;
        b.task.abort();
        until(&c, Role::Leader, ttl * 4).await;
        c.stop.cancel();
        c.task.await.unwrap();
    }

    /// A master restarted before its old lease expired finds its own address in the leader
    /// key, removes that stale term and leads at once, not after the TTL.
    #[tokio::test]
    async fn test_restarted_leader_does_not_wait_for_its_old_lease() {
        let etcd = testkit::etcd::Etcd::start();
        let cfg = config(&etcd);
        let lease = cfg.client.lease_grant(60).await.unwrap();
        cfg.client
            .put(&PutRequest::new(cfg.leader_key(), b"a:1".to_vec()).with_lease(lease.id))
            .await
            .unwrap();
        let a = candidate(&etcd, "a:1");
        let took = until(&a, Role::Leader, Duration::from_secs(10)).await;
        assert!(took < Duration::from_secs(5), "took {took:?}");
        a.stop.cancel();
        a.task.await.unwrap();
    }

    /// A leader whose key is deleted while its lease lives (another master that wrongly took
    /// the address for its own, say) steps down at its next renewal, then wins a new term.
    #[tokio::test]
    async fn test_leader_steps_down_when_its_key_is_gone() {
        let etcd = testkit::etcd::Etcd::start();
        let cfg = config(&etcd);
        let a = candidate(&etcd, "a:1");
        until(&a, Role::Leader, Duration::from_secs(10)).await;
        let kv = cfg.client.get(cfg.leader_key()).await.unwrap().unwrap();
        cfg.client
            .delete_range(&DeleteRangeRequest::key(cfg.leader_key()))
            .await
            .unwrap();
        let start = Instant::now();
        while a.master.metrics().step_downs.get() == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never stepped down"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        until(&a, Role::Leader, Duration::from_secs(10)).await;
        let now = cfg.client.get(cfg.leader_key()).await.unwrap().unwrap();
        assert!(now.create_revision > kv.create_revision, "a new term");
        a.stop.cancel();
        a.task.await.unwrap();
    }

    /// A leader whose lease is revoked behind its back (as etcd does when it expires) steps
    /// down at its next renewal and refuses ids.
    #[tokio::test]
    async fn test_leader_steps_down_when_its_lease_is_gone() {
        let etcd = testkit::etcd::Etcd::start();
        let cfg = config(&etcd);
        let a = candidate(&etcd, "a:1");
        until(&a, Role::Leader, Duration::from_secs(10)).await;
        let kv = cfg.client.get(cfg.leader_key()).await.unwrap().unwrap();
        cfg.client.lease_revoke(kv.lease).await.unwrap();
        // Stepped down, then (the key gone) elected again in a new term.
        let start = Instant::now();
        loop {
            let now = cfg.client.get(cfg.leader_key()).await.unwrap();
            if now.is_some_and(|n| n.create_revision > kv.create_revision)
                && a.master.leadership().role() == Role::Leader
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no new term");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = a.master.metrics();
        assert_eq!(m.terms_won.get(), 2);
        assert_eq!(m.step_downs.get(), 1);
        assert_eq!(m.is_leader.get(), 1);
        a.stop.cancel();
        a.task.await.unwrap();
        assert_eq!(m.is_leader.get(), 0, "it handed the lease back");
    }
}
