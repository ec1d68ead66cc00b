//! One group's state and its transitions (see the parent module for the protocol).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{GroupLimits, GroupState, JoinOutcome, SyncOutcome};
use crate::error::code;

#[derive(Debug)]
pub(super) struct Member {
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    pub(super) join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    pub(super) sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, until when they may join.
    pub(super) pending: HashMap<String, Instant>,
    pub(super) rebalance_deadline: Option<Instant>,
    pub(super) not_before: Option<Instant>,
}

impl Group {
    pub(super) fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            not_before: None,
        }
    }

    /// Protocols every member supports.
    pub(super) fn common_protocols(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            common.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
        }
        common
    }

    pub(super) fn prepare_rebalance(&mut self, now: Instant, limits: &GroupLimits) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome {
                    error: code::REBALANCE_IN_PROGRESS,
                    ..Default::default()
                });
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + timeout);
        self.not_before = (was_empty && !limits.initial_delay.is_zero())
            .then(|| now + limits.initial_delay.min(timeout));
    }

    /// Completes the join phase when every member rejoined (after the initial delay) or the
    /// rebalance timeout passed.
    pub(super) fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delayed = self.not_before.is_some_and(|t| now < t);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !((all_joined && !delayed) || timed_out) {
            return;
        }
        let dropped: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            tracing::info!(member_id = %id, "member did not rejoin in time, removed");
            self.members.remove(&id);
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        self.not_before = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        let common = self.common_protocols();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let chosen = common
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(c.as_str()).copied().unwrap_or(0),
                    std::cmp::Reverse(common.iter().position(|x| x == *c)),
                )
            })
            .cloned();
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        self.leader = Some(leader.clone());
        self.protocol = chosen.clone();
        self.state = GroupState::CompletingRebalance;
        let metadata: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == chosen.as_ref())
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        tracing::info!(generation = self.generation, leader = %leader, members = self.members.len(),
            protocol = chosen.as_deref().unwrap_or(""), "group rebalanced");
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinOutcome {
                    error: code::NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: chosen.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        metadata.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    pub(super) fn remove_member(&mut self, id: &str, now: Instant, limits: &GroupLimits) -> bool {
        if self.members.remove(id).is_none() {
            return false;
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.leader = None;
            self.protocol = None;
            self.rebalance_deadline = None;
        } else {
            if self.state != GroupState::PreparingRebalance {
                self.prepare_rebalance(now, limits);
            }
            self.try_complete_join(now);
        }
        true
    }
}
