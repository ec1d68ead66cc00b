//! The group coordinator through the codec: member ids, generations, rebalances on join,
//! leave and session timeout, offsets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka::KafkaConfig;
use kafka_protocol::messages::*;

use crate::harness::{Client, Server, name, sb};

fn join_req(member: &str, session_ms: i32) -> JoinGroupRequest {
    let mut p = join_group_request::JoinGroupRequestProtocol::default();
    p.name = sb("range");
    p.metadata = Bytes::from_static(b"meta");
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(sb("g"));
    r.session_timeout_ms = session_ms;
    r.rebalance_timeout_ms = 10_000;
    r.member_id = sb(member);
    r.protocol_type = sb("consumer");
    r.protocols = vec![p];
    r
}

async fn join(c: &mut Client, member: &str, session_ms: i32) -> JoinGroupResponse {
    c.call(ApiKey::JoinGroup, 5, &join_req(member, session_ms))
        .await
}

/// A new member: MEMBER_ID_REQUIRED first, then the join with that id.
async fn join_new(c: &mut Client, session_ms: i32) -> JoinGroupResponse {
    let first = join(c, "", session_ms).await;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    assert!(!first.member_id.is_empty());
    join(c, first.member_id.as_str(), session_ms).await
}

async fn sync(
    c: &mut Client,
    member: &str,
    gen_id: i32,
    assign: Vec<(&str, &'static [u8])>,
) -> SyncGroupResponse {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(sb("g"));
    r.generation_id = gen_id;
    r.member_id = sb(member);
    r.assignments = assign
        .into_iter()
        .map(|(m, a)| {
            let mut x = sync_group_request::SyncGroupRequestAssignment::default();
            x.member_id = sb(m);
            x.assignment = Bytes::from_static(a);
            x
        })
        .collect();
    c.call(ApiKey::SyncGroup, 5, &r).await
}

async fn heartbeat(c: &mut Client, member: &str, gen_id: i32) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(sb("g"));
    r.generation_id = gen_id;
    r.member_id = sb(member);
    let resp: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &r).await;
    resp.error_code
}

async fn describe(c: &mut Client) -> describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(sb("g"))];
    let mut resp: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &r).await;
    resp.groups.remove(0)
}

#[tokio::test]
async fn test_group_join_sync_rebalance_leave_and_offsets() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    let mut admin = s.client().await;
    assert_eq!(describe(&mut admin).await.group_state.as_str(), "Dead");

    let ja = join_new(&mut a, 30_000).await;
    assert_eq!(ja.error_code, 0);
    let ida = ja.member_id.as_str().to_owned();
    assert_eq!(ja.leader.as_str(), ida);
    assert_eq!(ja.members.len(), 1);
    assert_eq!(ja.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    let g1 = ja.generation_id;
    let sa = sync(&mut a, &ida, g1, vec![(&ida, b"A1")]).await;
    assert_eq!((sa.error_code, &sa.assignment[..]), (0, &b"A1"[..]));
    assert_eq!(heartbeat(&mut a, &ida, g1).await, 0);
    assert_eq!(
        heartbeat(&mut a, "stranger", g1).await,
        25,
        "UNKNOWN_MEMBER_ID"
    );
    assert_eq!(
        heartbeat(&mut a, &ida, g1 + 7).await,
        22,
        "ILLEGAL_GENERATION"
    );

    // B joins: its join waits until A rejoins, which A learns from its heartbeat.
    let first = join(&mut b, "", 30_000).await;
    let idb = first.member_id.as_str().to_owned();
    let (corr_b, frame) = b.frame(ApiKey::JoinGroup, 5, &join_req(&idb, 30_000));
    b.send_raw(&frame).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let code = heartbeat(&mut a, &ida, g1).await;
        if code == 27 {
            break;
        }
        assert!(Instant::now() < deadline, "A never told to rejoin");
        tokio::task::yield_now().await;
    }
    let ja = join(&mut a, &ida, 30_000).await;
    let (got, jb) = Client::decode::<JoinGroupResponse>(b.read_frame().await.unwrap(), 5);
    assert_eq!(got, corr_b);
    assert_eq!((ja.error_code, jb.error_code), (0, 0));
    let g2 = ja.generation_id;
    assert_eq!(g2, g1 + 1);
    assert_eq!(jb.generation_id, g2);
    assert_eq!(ja.leader, jb.leader);
    assert_eq!(
        ja.members.len() + jb.members.len(),
        2,
        "only the leader gets the members"
    );

    // Follower syncs first and waits for the leader's assignment.
    let (leader, lc, follower, fc) = if ja.leader.as_str() == ida {
        (ida.clone(), &mut a, idb.clone(), &mut b)
    } else {
        (idb.clone(), &mut b, ida.clone(), &mut a)
    };
    let mut fs = SyncGroupRequest::default();
    fs.group_id = GroupId(sb("g"));
    fs.generation_id = g2;
    fs.member_id = sb(&follower);
    let (corr_f, frame) = fc.frame(ApiKey::SyncGroup, 5, &fs);
    fc.send_raw(&frame).await;
    let ls = sync(lc, &leader, g2, vec![(&leader, b"L"), (&follower, b"F")]).await;
    assert_eq!(&ls.assignment[..], b"L");
    let (got, fsr) = Client::decode::<SyncGroupResponse>(fc.read_frame().await.unwrap(), 5);
    assert_eq!(
        (got, fsr.error_code, &fsr.assignment[..]),
        (corr_f, 0, &b"F"[..])
    );
    let d = describe(&mut admin).await;
    assert_eq!((d.group_state.as_str(), d.members.len()), ("Stable", 2));
    assert_eq!(d.members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(d.members[0].client_id.as_str(), "it");

    // Offsets: a member commits in the current generation; a stale generation is refused.
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = name("gt");
    t.num_partitions = 2;
    t.replication_factor = 1;
    let mut ct = CreateTopicsRequest::default();
    ct.topics = vec![t];
    let _: CreateTopicsResponse = admin.call(ApiKey::CreateTopics, 5, &ct).await;
    let commit = |gen_id: i32, member: &str| {
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = 1;
        p.committed_offset = 42;
        p.committed_metadata = Some(sb("m"));
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = name("gt");
        t.partitions = vec![p];
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(sb("g"));
        r.generation_id_or_member_epoch = gen_id;
        r.member_id = sb(member);
        r.topics = vec![t];
        r
    };
    let r: OffsetCommitResponse = admin
        .call(ApiKey::OffsetCommit, 8, &commit(g1, &leader))
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 22);
    let r: OffsetCommitResponse = admin
        .call(ApiKey::OffsetCommit, 8, &commit(g2, &leader))
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let mut of = OffsetFetchRequest::default();
    of.group_id = GroupId(sb("g"));
    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = name("gt");
    t.partition_indexes = vec![0, 1];
    of.topics = Some(vec![t]);
    let r: OffsetFetchResponse = admin.call(ApiKey::OffsetFetch, 7, &of).await;
    let offs: Vec<i64> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offs, vec![-1, 42]);
    let mut of8 = OffsetFetchRequest::default();
    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
    g.group_id = GroupId(sb("g"));
    g.topics = None;
    of8.groups = vec![g];
    let r: OffsetFetchResponse = admin.call(ApiKey::OffsetFetch, 8, &of8).await;
    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 42);

    // The leader leaves: the follower must rejoin and becomes the only member and leader.
    let mut l = LeaveGroupRequest::default();
    l.group_id = GroupId(sb("g"));
    let mut m = leave_group_request::MemberIdentity::default();
    m.member_id = sb(&leader);
    l.members = vec![m];
    let r: LeaveGroupResponse = lc.call(ApiKey::LeaveGroup, 4, &l).await;
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(
        heartbeat(fc, &follower, g2).await,
        27,
        "REBALANCE_IN_PROGRESS"
    );
    let j = join(fc, &follower, 30_000).await;
    assert_eq!((j.error_code, j.leader.as_str()), (0, follower.as_str()));
    let r: ListGroupsResponse = admin
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert_eq!(r.groups.len(), 1);
}

#[tokio::test]
async fn test_group_session_timeout_removes_a_silent_member() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    let mut admin = s.client().await;
    let ja = join_new(&mut a, 1_000).await;
    let ida = ja.member_id.as_str().to_owned();
    let sa = sync(&mut a, &ida, ja.generation_id, vec![]).await;
    assert_eq!(sa.error_code, 0);
    // B joins with a long session; A stays silent and is dropped after its 1 s session.
    let first = join(&mut b, "", 30_000).await;
    let jb = join(&mut b, first.member_id.as_str(), 30_000).await;
    assert_eq!(jb.error_code, 0);
    assert_eq!(jb.leader, first.member_id);
    assert_eq!(jb.members.len(), 1, "A was removed");
    assert_eq!(heartbeat(&mut a, &ida, ja.generation_id).await, 25);
    let d = describe(&mut admin).await;
    assert_eq!(d.members.len(), 1);
    // Old join (v0-3) gets an id without MEMBER_ID_REQUIRED.
    let mut c = s.client().await;
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 3, &join_req("", 500)).await;
    assert_eq!(
        r.error_code, 26,
        "INVALID_SESSION_TIMEOUT below the minimum"
    );
}
