//! Shared partition ownership (`--ownership shared`): which brokers are alive, and which one
//! of them should own each partition.
//!
//! Every broker holds a member lease (`common::lease`) at `/brokers/members/<name>` in the
//! filer, renewed every `ttl/4`; its entry names the broker's URL (`holder`) and its Kafka
//! address (`kafka`). The live members are the entries whose `expires_ms` lies ahead.
//! Each partition's owner is chosen by rendezvous hashing over the live members
//! ([`owner_of`]): every broker computes the same answer from the same member list, a joining
//! broker takes about `1/n` of the partitions from the others and a leaving one's partitions
//! spread over the rest, nothing else moves. The hash is spelled out here (FNV-1a and a
//! SplitMix64 finaliser), not `std`'s, so brokers of different builds agree.
//!
//! What makes ownership safe is not this list (two brokers may briefly disagree on it) but
//! the partition's owner epoch in the filer: taking a partition raises it, and a commit under
//! an older epoch is refused (`crate::store`). `crate::service` moves partitions.

use common::api::filer::ListQuery;
use common::client::filer::FilerClient;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::store::TopicKey;

/// The filer directory of the member leases.
pub const MEMBERS_DIR: &str = "/brokers/members";

/// A live broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// Its base URL (`http://host:port`), where clients are redirected to.
    pub url: String,
    /// Its Kafka listener (`host:port`), when it runs one.
    pub kafka: Option<String>,
}

/// Where the live members are listed.
pub trait Members: Send + Sync + 'static {
    /// The live members (any order).
    fn live(&self) -> BoxFuture<'_, Result<Vec<Member>, String>>;
}

/// The member lease path of the broker at `url`.
pub fn member_path(url: &str) -> String {
    let name: String = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{MEMBERS_DIR}/{name}.lease")
}

/// The member leases in the filer.
#[derive(Debug, Clone)]
pub struct FilerMembers {
    filer: FilerClient,
}

impl FilerMembers {
    /// Lists the leases under [`MEMBERS_DIR`] of `filer`.
    pub fn new(filer: FilerClient) -> Self {
        Self { filer }
    }
}

impl Members for FilerMembers {
    fn live(&self) -> BoxFuture<'_, Result<Vec<Member>, String>> {
        async move {
            let now = common::time::now_ms();
            let mut members = Vec::new();
            let mut start = String::new();
            loop {
                let page = self
                    .filer
                    .list(&ListQuery {
                        dir: MEMBERS_DIR.to_owned(),
                        start: Some(start.clone()).filter(|s| !s.is_empty()),
                        inclusive: false,
                        limit: Some(1000),
                        reverse: false,
                    })
                    .await
                    .map_err(|e| format!("list the broker members in {MEMBERS_DIR}: {e}"))?;
                for e in &page.entries {
                    let expires: u64 = e
                        .extended
                        .get("expires_ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if let Some(url) = e.extended.get("holder")
                        && expires > now
                    {
                        members.push(Member {
                            url: url.clone(),
                            kafka: e.extended.get("kafka").cloned(),
                        });
                    }
                }
                match page.entries.last() {
                    Some(last) if page.has_more => {
                        start = last
                            .full_path
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                    }
                    _ => break,
                }
            }
            Ok(members)
        }
        .boxed()
    }
}

/// FNV-1a over `parts` (each followed by a 0 byte), finished with SplitMix64.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member with the highest score for `what` (ties go to the smaller URL).
fn highest<'a>(members: &'a [Member], what: &[&[u8]]) -> Option<&'a Member> {
    members
        .iter()
        .map(|m| {
            let mut parts = vec![m.url.as_bytes()];
            parts.extend_from_slice(what);
            (stable_hash(&parts), m)
        })
        .max_by(|(a, ma), (b, mb)| a.cmp(b).then_with(|| mb.url.cmp(&ma.url)))
        .map(|(_, m)| m)
}

/// The member that should own partition `p` of `key`; `None` without members.
pub fn owner_of<'a>(members: &'a [Member], key: &TopicKey, p: u32) -> Option<&'a Member> {
    highest(
        members,
        &[key.ns.as_bytes(), key.name.as_bytes(), &p.to_be_bytes()],
    )
}

/// The Kafka broker id of the member at `url` (every broker derives the same one).
pub fn node_id(url: &str) -> i32 {
    (stable_hash(&[url.as_bytes()]) & 0x7fff_ffff) as i32
}

/// The member that coordinates consumer group `group`; `None` without members.
pub fn coordinator_of<'a>(members: &'a [Member], group: &str) -> Option<&'a Member> {
    highest(members, &[b"group", group.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                url: format!("http://10.0.0.{i}:8090"),
                kafka: None,
            })
            .collect()
    }

    fn owners(ms: &[Member], parts: u32) -> Vec<String> {
        let key = TopicKey::new("ns", "t");
        (0..parts)
            .map(|p| owner_of(ms, &key, p).unwrap().url.clone())
            .collect()
    }

    #[test]
    fn test_owners_are_spread_and_stable() {
        let two = members(2);
        let o = owners(&two, 1024);
        let first = o.iter().filter(|u| **u == two[0].url).count();
        // Each of two brokers gets about half (binomial: 512 ± 3 sigma = 48).
        assert!((512 - 64..=512 + 64).contains(&first), "{first} of 1024");
        // The order of the list does not matter.
        let mut rev = two.clone();
        rev.reverse();
        assert_eq!(owners(&rev, 1024), o);
        assert!(owner_of(&[], &TopicKey::new("a", "b"), 0).is_none());
    }

    #[test]
    fn test_only_the_leaving_members_partitions_move() {
        let three = members(3);
        let before = owners(&three, 512);
        let after = owners(&three[..2], 512);
        for (b, a) in before.iter().zip(&after) {
            if *b != three[2].url {
                assert_eq!(a, b, "a partition of a member that stayed moved");
            }
        }
        // A joining member takes only partitions it then owns.
        let joined = owners(&three, 512);
        for (a, j) in after.iter().zip(&joined) {
            assert!(a == j || *j == three[2].url);
        }
    }

    #[test]
    fn test_member_path_is_one_safe_name() {
        assert_eq!(
            member_path("http://127.0.0.1:8090"),
            "/brokers/members/127.0.0.1_8090.lease"
        );
        assert_eq!(
            member_path("https://b-1.kelp:8090/x"),
            "/brokers/members/b-1.kelp_8090_x.lease"
        );
        assert!(coordinator_of(&members(3), "g").is_some());
    }
}
