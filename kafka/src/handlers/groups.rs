//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups, ListGroups: the wire side of
//! [`crate::group::Coordinator`].

use std::time::Duration;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use tokio::sync::oneshot;

use super::admin::not_coordinator;
use super::{Ctx, HandleError, Reply, decode, respond, str_bytes};
use crate::codec::Request;
use crate::error::code;
use crate::group::{JoinArgs, JoinOutcome, Pending, SyncOutcome};

/// Longest a SyncGroup follower waits for its leader.
const SYNC_WAIT: Duration = Duration::from_secs(300);

async fn settle<T>(p: Pending<T>, bound: Duration, closed: impl FnOnce() -> T) -> T {
    match p {
        Pending::Done(t) => t,
        Pending::Wait(rx) => wait(rx, bound).await.unwrap_or_else(closed),
    }
}

async fn wait<T>(rx: oneshot::Receiver<T>, bound: Duration) -> Option<T> {
    tokio::time::timeout(bound, rx).await.ok()?.ok()
}

fn ms(v: i32) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// JoinGroup: waits until the rebalance completes (or the member must retry).
pub async fn join(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: JoinGroupRequest = decode(req, "join_group")?;
    let session_timeout = ms(r.session_timeout_ms);
    let rebalance_timeout = if req.api_version == 0 || r.rebalance_timeout_ms <= 0 {
        session_timeout
    } else {
        ms(r.rebalance_timeout_ms)
    };
    let args = JoinArgs {
        member_id: r.member_id.as_str().to_owned(),
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: req.client_host.clone(),
        session_timeout,
        rebalance_timeout,
        protocol_type: r.protocol_type.as_str().to_owned(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect(),
        require_known_member_id: req.api_version >= 4,
    };
    let member_id = args.member_id.clone();
    if not_coordinator(ctx, r.group_id.0.as_str()) {
        let mut resp = JoinGroupResponse::default();
        resp.error_code = code::NOT_COORDINATOR;
        resp.generation_id = -1;
        resp.member_id = str_bytes(&member_id);
        resp.protocol_name = (req.api_version < 7).then(|| str_bytes(""));
        return respond(req, &resp);
    }
    let pending = ctx.groups.join(r.group_id.0.as_str(), args);
    let outcome = settle(pending, rebalance_timeout + Duration::from_secs(5), || {
        JoinOutcome {
            error: code::REBALANCE_IN_PROGRESS,
            generation: -1,
            member_id,
            ..Default::default()
        }
    })
    .await;
    let mut resp = JoinGroupResponse::default();
    resp.error_code = outcome.error;
    resp.generation_id = outcome.generation;
    resp.protocol_type = outcome.protocol_type.map(|s| str_bytes(&s));
    resp.protocol_name = Some(str_bytes(outcome.protocol_name.as_deref().unwrap_or("")));
    if req.api_version >= 7 && outcome.error != code::NONE {
        resp.protocol_name = None;
    }
    resp.leader = str_bytes(&outcome.leader);
    resp.member_id = str_bytes(&outcome.member_id);
    resp.members = outcome
        .members
        .into_iter()
        .map(|(id, meta)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            m.metadata = meta;
            m
        })
        .collect();
    respond(req, &resp)
}

/// SyncGroup: the leader hands out assignments; followers wait for theirs.
pub async fn sync(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: SyncGroupRequest = decode(req, "sync_group")?;
    if not_coordinator(ctx, r.group_id.0.as_str()) {
        let mut resp = SyncGroupResponse::default();
        resp.error_code = code::NOT_COORDINATOR;
        return respond(req, &resp);
    }
    let assignments = r
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_owned(), a.assignment.clone()))
        .collect();
    let pending = ctx.groups.sync(
        r.group_id.0.as_str(),
        r.member_id.as_str(),
        r.generation_id,
        assignments,
    );
    let outcome = settle(pending, SYNC_WAIT, || SyncOutcome {
        error: code::REBALANCE_IN_PROGRESS,
        ..Default::default()
    })
    .await;
    let mut resp = SyncGroupResponse::default();
    resp.error_code = outcome.error;
    resp.protocol_type = outcome.protocol_type.map(|s| str_bytes(&s));
    resp.protocol_name = outcome.protocol_name.map(|s| str_bytes(&s));
    resp.assignment = outcome.assignment;
    respond(req, &resp)
}

/// Heartbeat.
pub fn heartbeat(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: HeartbeatRequest = decode(req, "heartbeat")?;
    let mut resp = HeartbeatResponse::default();
    resp.error_code = if not_coordinator(ctx, r.group_id.0.as_str()) {
        code::NOT_COORDINATOR
    } else {
        ctx.groups
            .heartbeat(r.group_id.0.as_str(), r.member_id.as_str(), r.generation_id)
    };
    respond(req, &resp)
}

/// LeaveGroup: v0-2 one member, v3+ several.
pub fn leave(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: LeaveGroupRequest = decode(req, "leave_group")?;
    let ids: Vec<String> = if req.api_version >= 3 {
        r.members
            .iter()
            .map(|m| m.member_id.as_str().to_owned())
            .collect()
    } else {
        vec![r.member_id.as_str().to_owned()]
    };
    let mut resp = LeaveGroupResponse::default();
    if not_coordinator(ctx, r.group_id.0.as_str()) {
        resp.error_code = code::NOT_COORDINATOR;
        return respond(req, &resp);
    }
    let codes = ctx.groups.leave(r.group_id.0.as_str(), &ids);
    if req.api_version >= 3 {
        resp.members = ids
            .iter()
            .zip(&codes)
            .map(|(id, c)| {
                let mut m = MemberResponse::default();
                m.member_id = str_bytes(id);
                m.error_code = *c;
                m
            })
            .collect();
    } else {
        resp.error_code = codes.first().copied().unwrap_or(code::NONE);
    }
    respond(req, &resp)
}

/// DescribeGroups: an unknown group is reported as `Dead` without error, as Kafka does.
pub fn describe(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: DescribeGroupsRequest = decode(req, "describe_groups")?;
    let mut resp = DescribeGroupsResponse::default();
    for g in r.groups {
        let mut out = DescribedGroup::default();
        out.group_id = g.clone();
        match ctx.groups.describe(g.0.as_str()) {
            None => out.group_state = str_bytes("Dead"),
            Some(view) => {
                out.group_state = str_bytes(view.state.as_str());
                out.protocol_type = str_bytes(&view.protocol_type);
                out.protocol_data = str_bytes(&view.protocol);
                out.members = view
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default();
                        d.member_id = str_bytes(&m.member_id);
                        d.client_id = str_bytes(&m.client_id);
                        d.client_host = str_bytes(&m.client_host);
                        d.member_metadata = m.metadata;
                        d.member_assignment = m.assignment;
                        d
                    })
                    .collect();
            }
        }
        resp.groups.push(out);
    }
    respond(req, &resp)
}

/// ListGroups, filtered by state (v4+).
pub fn list(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: ListGroupsRequest = decode(req, "list_groups")?;
    let mut resp = ListGroupsResponse::default();
    resp.groups = ctx
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            r.states_filter.is_empty()
                || r.states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(state.as_str()))
        })
        .map(|(id, ptype, state)| {
            let mut l = ListedGroup::default();
            l.group_id = GroupId(str_bytes(&id));
            l.protocol_type = str_bytes(&ptype);
            l.group_state = str_bytes(state.as_str());
            l
        })
        .collect();
    respond(req, &resp)
}
