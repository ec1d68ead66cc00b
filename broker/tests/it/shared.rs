//! Shared partition ownership (`--ownership shared`) on one store: brokers split a topic's
//! partitions, redirect what they do not own, and move partitions when a broker leaves or
//! joins — with every acknowledged record readable afterwards, once, at its offset.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::broker::{Acks, Isolation};
use common::lease::Leadership;
use futures::FutureExt;
use futures::future::BoxFuture;
use kelp_broker::Broker;
use kelp_broker::members::{Member, Members};
use kelp_broker::service::Error;
use kelp_broker::store::mem::MemStore;
use tokio_util::sync::CancellationToken;

use crate::helpers::{cfg, eventually, fetch, key, recs};

/// A member list the test edits.
#[derive(Default)]
struct Static(Mutex<Vec<Member>>);

impl Static {
    fn set(&self, urls: &[&str]) {
        *self.0.lock().unwrap() = urls
            .iter()
            .map(|u| Member {
                url: (*u).to_owned(),
                kafka: None,
            })
            .collect();
    }
}

impl Members for Static {
    fn live(&self) -> BoxFuture<'_, Result<Vec<Member>, String>> {
        let v = self.0.lock().unwrap().clone();
        async move { Ok(v) }.boxed()
    }
}

/// A broker at `url` sharing `store`'s partitions with `members`.
async fn member(
    url: &str,
    store: &Arc<MemStore>,
    members: &Arc<Static>,
) -> (Arc<Broker>, CancellationToken) {
    let stop = CancellationToken::new();
    let b = Broker::with_leadership(
        cfg(),
        store.clone(),
        stop.clone(),
        Arc::new(Leadership::single(url)),
    );
    b.spawn_loader(Some((members.clone() as _, Duration::from_millis(30))));
    eventually("the broker shares partitions", || b.is_loaded()).await;
    (b, stop)
}

/// Which partitions `b` serves.
fn owned(b: &Broker) -> Vec<u32> {
    b.topic(&key()).map(|t| t.owned.clone()).unwrap_or_default()
}

/// Every durable value of every partition, read from the brokers that own them.
async fn read_all(brokers: &[&Arc<Broker>], partitions: u32) -> BTreeMap<u32, Vec<String>> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let owner = brokers
            .iter()
            .find(|b| owned(b).contains(&p))
            .unwrap_or_else(|| panic!("nobody serves partition {p}"));
        let f = fetch(owner, p, 0, Isolation::Durable).await;
        out.insert(
            p,
            f.records.iter().map(|r| r.value.clone().unwrap()).collect(),
        );
    }
    out
}

#[tokio::test]
async fn test_brokers_split_partitions_and_move_them_without_losing_a_record() {
    const N: u32 = 8;
    let store = Arc::new(MemStore::new());
    let members = Arc::new(Static::default());
    members.set(&["http://a", "http://b"]);
    let (a, _stop_a) = member("http://a", &store, &members).await;
    let (b, stop_b) = member("http://b", &store, &members).await;
    a.create_topic(key(), N).await.unwrap();
    eventually("every partition has exactly one owner", || {
        let (oa, ob) = (owned(&a), owned(&b));
        oa.len() + ob.len() == N as usize && oa.iter().all(|p| !ob.contains(p))
    })
    .await;
    let (oa, ob) = (owned(&a), owned(&b));
    assert!(!oa.is_empty() && !ob.is_empty(), "a {oa:?} b {ob:?}");

    // Records without a partition go to the partitions the broker owns.
    let mut want: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (broker, mine) in [(&a, &oa), (&b, &ob)] {
        let unrouted: Vec<_> = recs(0, 0, 20)
            .into_iter()
            .map(|mut r| {
                r.partition = None;
                r
            })
            .collect();
        let got = broker
            .publish(&key(), unrouted, Acks::Durable, None)
            .await
            .unwrap();
        for (o, v) in got.response.offsets.iter().zip(0..) {
            assert!(
                mine.contains(&o.partition),
                "{o:?} went to a foreign partition"
            );
            want.entry(o.partition).or_default().push(format!("v{v}"));
        }
    }
    // A partition another broker owns: its owner is named (HTTP redirects there).
    let err = a
        .publish(&key(), recs(ob[0], 0, 1), Acks::Durable, None)
        .await
        .unwrap_err();
    match err {
        Error::NotOwner {
            partition,
            owner: Some(owner),
            ..
        } => assert_eq!((partition, owner.as_str()), (ob[0], "http://b")),
        e => panic!("expected NotOwner, got {e}"),
    }
    let mut split = recs(oa[0], 0, 1);
    split.extend(recs(ob[0], 1, 1));
    let err = a
        .publish(&key(), split, Acks::Durable, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SplitPublish { .. }), "{err}");
    assert!(matches!(
        a.fetch(&key(), ob[0], common::api::broker::FetchQuery::at(0))
            .await
            .unwrap_err(),
        Error::NotOwner { .. }
    ));

    // b leaves (stops; its lease lapses): a takes every partition over, from the store.
    stop_b.cancel();
    members.set(&["http://a"]);
    eventually("a serves every partition", || owned(&a).len() == N as usize).await;
    assert_eq!(read_all(&[&a], N).await, fill(&want, N));

    // c joins: a hands partitions over (flushing what it buffered first), c takes them.
    // Slow writes and commits keep the buffered records' flushes in flight while a drains:
    // a records each release only once they committed, so none is left for c to force.
    store.faults.delay_us.store(40_000, Ordering::SeqCst);
    let releases_before = store.releases.load(Ordering::SeqCst);
    let buffered: Vec<_> = recs(0, 100, 10)
        .into_iter()
        .map(|mut r| {
            r.partition = None;
            r
        })
        .collect();
    let got = a
        .publish(&key(), buffered, Acks::Buffered, None)
        .await
        .unwrap();
    for (o, v) in got.response.offsets.iter().zip(100..) {
        want.entry(o.partition).or_default().push(format!("v{v}"));
    }
    members.set(&["http://a", "http://c"]);
    let (c, _stop_c) = member("http://c", &store, &members).await;
    eventually("a and c split the partitions", || {
        let (oa, oc) = (owned(&a), owned(&c));
        !oc.is_empty() && oa.len() + oc.len() == N as usize && oa.iter().all(|p| !oc.contains(p))
    })
    .await;
    // Buffered records of the partitions a kept become durable within a (slow) flush.
    let expected = fill(&want, N);
    let started = std::time::Instant::now();
    while read_all(&[&a, &c], N).await != expected && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_all(&[&a, &c], N).await, expected);
    assert_eq!(
        store.releases.load(Ordering::SeqCst) - releases_before,
        owned(&c).len() as u64,
        "every partition a handed to c was released cleanly"
    );
    store.faults.delay_us.store(0, Ordering::SeqCst);
    // The new owner goes on where the log ends.
    let p = owned(&c)[0];
    let at = want.get(&p).map_or(0, Vec::len) as u64;
    let got = c
        .publish(&key(), recs(p, 200, 1), Acks::Durable, None)
        .await
        .unwrap();
    assert_eq!(got.response.offsets[0].offset, at);
}

/// `want` with an empty list for every partition that got nothing.
fn fill(want: &BTreeMap<u32, Vec<String>>, n: u32) -> BTreeMap<u32, Vec<String>> {
    (0..n)
        .map(|p| (p, want.get(&p).cloned().unwrap_or_default()))
        .collect()
}
