//! The group coordinator: Kafka's classic consumer group protocol with the members' own
//! assignors (range, roundrobin, cooperative-sticky all run in the clients).
//!
//! A group moves Empty → PreparingRebalance (on a join, a leave or a session timeout) →
//! CompletingRebalance (every member rejoined, or the rebalance timeout passed: members that
//! did not rejoin are dropped, the generation goes up, the leader gets every member's
//! metadata) → Stable (the leader's SyncGroup hands each member its assignment). Members that
//! must rejoin learn it from REBALANCE_IN_PROGRESS on Heartbeat, SyncGroup or OffsetCommit.
//! State lives in memory: after a restart members get UNKNOWN_MEMBER_ID and rejoin;
//! committed offsets are the backend's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::sync::LockExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::code;

mod state;

use state::{Group, Member};

/// Group limits, from [`crate::KafkaConfig`].
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Smallest session timeout accepted.
    pub session_min: Duration,
    /// Largest session timeout accepted.
    pub session_max: Duration,
    /// Wait for more members before the first rebalance of an empty group.
    pub initial_delay: Duration,
}

/// A group's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned.
    Stable,
}

impl GroupState {
    /// The name Kafka tools show.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    /// Member id, empty for a new member.
    pub member_id: String,
    /// Client id from the request header.
    pub client_id: String,
    /// The member's address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Protocol type (`consumer`).
    pub protocol_type: String,
    /// Protocols (assignor name, subscription metadata) in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    /// Error code.
    pub error: i16,
    /// New generation.
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen assignor.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// For the leader: every member's id and metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// Error code.
    pub error: i16,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen assignor.
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

/// An answer now, or once the rebalance gets there.
#[derive(Debug)]
pub enum Pending<T> {
    /// Answer now.
    Done(T),
    /// Wait for it.
    Wait(oneshot::Receiver<T>),
}

/// What DescribeGroups shows of a member.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Member id.
    pub member_id: String,
    /// Client id.
    pub client_id: String,
    /// The member's address.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}

/// What DescribeGroups shows of a group.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// Phase.
    pub state: GroupState,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen assignor.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberView>,
}

/// Every group of this node.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    limits: GroupLimits,
    next_member: AtomicU64,
}

impl Coordinator {
    /// No groups yet.
    pub fn new(limits: GroupLimits) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            groups: Mutex::new(HashMap::new()),
            limits,
            next_member: AtomicU64::new(seed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock_or_abort()
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!("{client_id}-{n:016x}")
    }

    /// JoinGroup.
    pub fn join(&self, group_id: &str, args: JoinArgs) -> Pending<JoinOutcome> {
        let now = Instant::now();
        let fail = |error, member_id: &str| {
            Pending::Done(JoinOutcome {
                error,
                generation: -1,
                member_id: member_id.to_owned(),
                ..Default::default()
            })
        };
        if group_id.is_empty() {
            return fail(code::INVALID_GROUP_ID, &args.member_id);
        }
        if args.session_timeout < self.limits.session_min
            || args.session_timeout > self.limits.session_max
        {
            return fail(code::INVALID_SESSION_TIMEOUT, &args.member_id);
        }
        if args.protocols.is_empty() || args.protocol_type.is_empty() {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, &args.member_id);
        }
        let mut groups = self.lock();
        let group = groups.entry(group_id.to_owned()).or_insert_with(Group::new);
        let others: Vec<&Member> = group
            .members
            .iter()
            .filter(|(id, _)| **id != args.member_id)
            .map(|(_, m)| m)
            .collect();
        if let Some(first) = others.first() {
            let mut common: Vec<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
            for m in &others[1..] {
                common.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
            }
            let type_ok = group.protocol_type.as_deref() == Some(args.protocol_type.as_str());
            let overlap = args
                .protocols
                .iter()
                .any(|(n, _)| common.contains(&n.as_str()));
            if !type_ok || !overlap {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL, &args.member_id);
            }
        }
        let member_id = if args.member_id.is_empty() {
            let id = self.new_member_id(&args.client_id);
            if args.require_known_member_id {
                group.pending.insert(id.clone(), now + args.session_timeout);
                return fail(code::MEMBER_ID_REQUIRED, &id);
            }
            id
        } else if group.members.contains_key(&args.member_id)
            || group.pending.remove(&args.member_id).is_some()
        {
            args.member_id.clone()
        } else {
            return fail(code::UNKNOWN_MEMBER_ID, &args.member_id);
        };
        group.protocol_type = Some(args.protocol_type.clone());
        let (tx, rx) = oneshot::channel();
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: args.client_id.clone(),
                client_host: args.client_host.clone(),
                session_timeout: args.session_timeout,
                rebalance_timeout: args.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
        member.session_timeout = args.session_timeout;
        member.rebalance_timeout = args.rebalance_timeout;
        member.protocols = args.protocols;
        member.last_seen = now;
        // A repeated join replaces the earlier one, which then sees its channel closed.
        member.join_waiter = Some(tx);
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now, &self.limits);
        }
        group.try_complete_join(now);
        Pending::Wait(rx)
    }

    /// SyncGroup; `assignments` is the leader's.
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncOutcome> {
        let fail = |error| {
            Pending::Done(SyncOutcome {
                error,
                ..Default::default()
            })
        };
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return fail(code::UNKNOWN_MEMBER_ID);
        };
        if !group.members.contains_key(member_id) {
            return fail(code::UNKNOWN_MEMBER_ID);
        }
        if group.state == GroupState::PreparingRebalance {
            return fail(code::REBALANCE_IN_PROGRESS);
        }
        if generation != group.generation {
            return fail(code::ILLEGAL_GENERATION);
        }
        let ok = |a: Bytes, g: &Group| SyncOutcome {
            error: code::NONE,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment: a,
        };
        if group.state == GroupState::Stable {
            let a = group.members[member_id].assignment.clone();
            return Pending::Done(ok(a, group));
        }
        if group.state != GroupState::CompletingRebalance {
            return fail(code::REBALANCE_IN_PROGRESS);
        }
        if group.leader.as_deref() == Some(member_id) {
            let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
            group.state = GroupState::Stable;
            let mut outcomes = Vec::new();
            for (id, m) in group.members.iter_mut() {
                m.assignment = by_member.remove(id).unwrap_or_default();
                m.last_seen = now;
                if let Some(w) = m.sync_waiter.take() {
                    outcomes.push((w, m.assignment.clone()));
                }
            }
            for (w, a) in outcomes {
                let _ = w.send(ok(a, group));
            }
            let a = group.members[member_id].assignment.clone();
            tracing::info!(generation, "group assignment distributed");
            Pending::Done(ok(a, group))
        } else {
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                m.sync_waiter = Some(tx);
                m.last_seen = now;
            }
            Pending::Wait(rx)
        }
    }

    /// Heartbeat: NONE, or what the member must do.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let state = group.state;
        let current = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = Instant::now();
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        code::NONE
    }

    /// LeaveGroup of several members: an error code per member.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<i16> {
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids.iter().map(|_| code::UNKNOWN_MEMBER_ID).collect();
        };
        member_ids
            .iter()
            .map(|id| {
                if group.remove_member(id, now, &self.limits) {
                    tracing::info!(member_id = %id, "member left the group");
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect()
    }

    /// Whether an OffsetCommit may be stored: generation -1 is a commit outside group
    /// management and always may.
    pub fn check_commit(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        if generation < 0 {
            return code::NONE;
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return code::ILLEGAL_GENERATION;
        };
        let state = group.state;
        let current = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = Instant::now();
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        code::NONE
    }

    /// Drops members whose session timed out and completes rebalances whose timeout passed.
    pub fn expire(&self, now: Instant) {
        let mut groups = self.lock();
        for (group_id, group) in groups.iter_mut() {
            group.pending.retain(|_, until| *until > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now >= m.last_seen + m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %group_id, member_id = %id, "member session expired");
                group.remove_member(&id, now, &self.limits);
            }
            group.try_complete_join(now);
        }
    }

    /// Runs [`Coordinator::expire`] every 100 ms until `shutdown`.
    pub async fn run_expiry(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.expire(Instant::now()),
            }
        }
    }

    /// A group's state, `None` when unknown.
    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        Some(GroupView {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol.as_ref())
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Every group: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GroupLimits {
        GroupLimits {
            session_min: Duration::from_millis(10),
            session_max: Duration::from_secs(60),
            initial_delay: Duration::ZERO,
        }
    }

    fn args(member: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member.to_owned(),
            client_id: "c".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".to_owned(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: false,
        }
    }

    fn done<T: std::fmt::Debug>(p: Pending<T>) -> T {
        match p {
            Pending::Done(t) => t,
            Pending::Wait(mut rx) => rx.try_recv().expect("answer ready"),
        }
    }

    #[test]
    fn test_coordinator_picks_the_common_protocol_by_votes() {
        let c = Coordinator::new(limits());
        let a = done(c.join("g", args("", &["range", "roundrobin"])));
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        // b prefers roundrobin and lacks range: the group must switch to roundrobin.
        let Pending::Wait(mut rb) = c.join("g", args("", &["roundrobin"])) else {
            panic!("b must wait for a to rejoin");
        };
        let a2 = done(c.join("g", args(&a.member_id, &["range", "roundrobin"])));
        let b = rb.try_recv().unwrap();
        assert_eq!(a2.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(b.generation, a2.generation);
        // A member with no protocol in common is refused.
        let x = done(c.join("g", args("", &["sticky"])));
        assert_eq!(x.error, code::INCONSISTENT_GROUP_PROTOCOL);
    }

    #[test]
    fn test_coordinator_rebalance_timeout_drops_members_that_do_not_rejoin() {
        let c = Coordinator::new(limits());
        let a = done(c.join("g", args("", &["range"])));
        let Pending::Wait(mut rb) = c.join("g", args("", &["range"])) else {
            panic!("b must wait");
        };
        assert!(rb.try_recv().is_err());
        c.expire(Instant::now() + Duration::from_secs(11));
        let b = rb.try_recv().unwrap();
        assert_eq!((b.error, b.members.len()), (code::NONE, 1));
        assert_eq!(b.leader, b.member_id);
        assert_eq!(
            c.heartbeat("g", &a.member_id, a.generation),
            code::UNKNOWN_MEMBER_ID
        );
        assert_eq!(c.list()[0].2, GroupState::CompletingRebalance);
    }
}
