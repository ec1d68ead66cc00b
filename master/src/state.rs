//! The master's durable state: the largest volume id allocated and a ceiling on file keys.
//!
//! One master keeps it in a file; masters in HA keep it in etcd (see [`EtcdTerm`]). Either way
//! the encoding is the same, little-endian:
//! `magic u32 ("KLPM") | format_version u32 (1) | max_volume_id u32 | key_ceiling u64 | crc32c u32`
//! (the CRC covers everything before it). Keys are handed out from memory below the persisted
//! ceiling; the ceiling is raised and persisted *before* any key above it is handed out, so
//! after a crash the master resumes at the ceiling and never issues a key twice (it skips the
//! unused rest of the last block).
//!
//! # Where it is persisted
//! - One master: the file `<dir>/master.state`, replaced atomically (temp, fsync, rename,
//!   fsync dir).
//! - Masters in HA: the key `<prefix>state` in etcd, written by a transaction that holds only
//!   while this master's leader key is the one it created when it won (its *term*, the key's
//!   create revision) and the state key is unchanged since this master last read or wrote it.
//!   A deposed leader's write is therefore refused, and since every leader starts at the
//!   persisted ceiling, the key ranges two leaders hand out never overlap, even while a
//!   deposed one has not noticed yet: it can only finish the block it reserved, which no
//!   later leader hands out. Volume ids are persisted one by one under the same guard.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use common::etcd::{Compare, CompareOp, CompareTarget, EtcdClient, PutRequest, TxnOp, TxnRequest};
use common::ids::VolumeId;

const MAGIC: u32 = u32::from_le_bytes(*b"KLPM");
const VERSION: u32 = 1;
const LEN: usize = 4 + 4 + 4 + 8 + 4;
/// Keys reserved per persisted step.
pub const KEY_STEP: u64 = 10_000;
/// Largest volume id [`Sequencer::observe`] follows (half the id space stays free above it).
pub const MAX_OBSERVED_VOLUME_ID: VolumeId = VolumeId::MAX / 2;
/// Largest file key [`Sequencer::observe`] follows (half the key space stays free above it).
pub const MAX_OBSERVED_KEY: u64 = u64::MAX / 2;

/// The persisted part of the master's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    /// Largest volume id ever allocated.
    pub max_volume_id: VolumeId,
    /// No key at or above this has been handed out.
    pub key_ceiling: u64,
}

impl Default for Persisted {
    fn default() -> Self {
        // Key 0 is never issued, so a file id always has a key part.
        Self {
            max_volume_id: 0,
            key_ceiling: 1,
        }
    }
}

impl Persisted {
    /// The larger of each counter: a state that hands out nothing either has handed out.
    pub fn max(self, other: Self) -> Self {
        Self {
            max_volume_id: self.max_volume_id.max(other.max_volume_id),
            key_ceiling: self.key_ceiling.max(other.key_ceiling),
        }
    }

    /// Encodes the state file.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_volume_id.to_le_bytes());
        b[12..20].copy_from_slice(&self.key_ceiling.to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies the state file.
    pub fn decode(b: &[u8]) -> anyhow::Result<Self> {
        if b.len() != LEN {
            bail!("state file is {} bytes, expected {LEN}", b.len());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        if u32_at(0) != MAGIC {
            bail!("state file has a bad magic number");
        }
        if u32_at(4) != VERSION {
            bail!("state file has unknown format version {}", u32_at(4));
        }
        if crc32c::crc32c(&b[..20]) != u32_at(20) {
            bail!("state file checksum mismatch");
        }
        Ok(Self {
            max_volume_id: u32_at(8),
            key_ceiling: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
        })
    }
}

/// A leader's hold on the state in etcd: the keys and the term its writes are guarded by.
#[derive(Debug, Clone)]
pub struct EtcdTerm {
    /// The etcd client.
    pub client: Arc<EtcdClient>,
    /// The key holding the encoded [`Persisted`].
    pub state_key: Vec<u8>,
    /// The leader key (see `crate::leader`).
    pub leader_key: Vec<u8>,
    /// The create revision of the leader key this master wrote when it won.
    pub term: i64,
}

/// Where the sequencer persists.
#[derive(Debug)]
enum Backing {
    /// `<dir>/master.state`.
    File(PathBuf),
    /// etcd, with the mod revision of the state key as this master last read or wrote it.
    Etcd { term: EtcdTerm, mod_revision: i64 },
}

/// Allocates volume ids and file keys, persisting before handing anything out.
#[derive(Debug)]
pub struct Sequencer {
    backing: Backing,
    persisted: Persisted,
    next_key: u64,
}

impl Sequencer {
    /// Loads `<dir>/master.state` (a fresh state when absent). A corrupt file refuses start-up:
    /// guessing could reissue ids.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("master.state");
        let persisted = read_file(&path)?.unwrap_or_default();
        tracing::info!(
            max_volume_id = persisted.max_volume_id,
            next_key = persisted.key_ceiling,
            "master state loaded"
        );
        Ok(Self {
            backing: Backing::File(path),
            next_key: persisted.key_ceiling,
            persisted,
        })
    }

    /// Loads the state a leader of `term` hands out from: the one in etcd, raised to `floor`
    /// (what this master saw in heartbeats, and its state file from before HA); a raise is
    /// persisted before this returns. A corrupt value refuses: guessing could reissue ids.
    pub async fn load_etcd(term: EtcdTerm, floor: Persisted) -> anyhow::Result<Self> {
        let (remote, mod_revision) = read_etcd(&term).await?;
        let mut seq = Self {
            backing: Backing::Etcd { term, mod_revision },
            next_key: remote.key_ceiling,
            persisted: remote,
        };
        let want = remote.max(floor);
        if want != remote {
            seq.persist(want).await?;
            seq.next_key = want.key_ceiling;
        }
        tracing::info!(
            max_volume_id = seq.persisted.max_volume_id,
            next_key = seq.next_key,
            "master state loaded from etcd"
        );
        Ok(seq)
    }

    /// Whether the state is shared with other masters (in etcd) rather than this master's file.
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Etcd { .. })
    }

    /// What is persisted now.
    pub fn persisted(&self) -> Persisted {
        self.persisted
    }

    /// Largest volume id allocated.
    pub fn max_volume_id(&self) -> VolumeId {
        self.persisted.max_volume_id
    }

    /// The next key to be handed out.
    pub fn next_key(&self) -> u64 {
        self.next_key
    }

    async fn persist(&mut self, next: Persisted) -> anyhow::Result<()> {
        match &mut self.backing {
            Backing::File(path) => common::fs::durable_overwrite(path, &next.encode())
                .with_context(|| format!("write {}", path.display()))?,
            Backing::Etcd { term, mod_revision } => {
                let mut next = next;
                // Twice at most: an answer lost after etcd applied our write leaves the key
                // one write ahead of `mod_revision`; re-read, and go on if still the leader.
                for attempt in 0..2 {
                    match write_etcd(term, *mod_revision, &next).await? {
                        Some(rev) => {
                            *mod_revision = rev;
                            break;
                        }
                        None if attempt == 0 => {
                            let (remote, rev) = read_etcd(term).await?;
                            next = next.max(remote);
                            *mod_revision = rev;
                        }
                        None => bail!(
                            "the master state in etcd keeps changing under this leader: another master is writing it"
                        ),
                    }
                }
                self.persisted = next;
                return Ok(());
            }
        }
        self.persisted = next;
        Ok(())
    }

    /// Reserves `count` consecutive keys and returns the first.
    pub async fn next_keys(&mut self, count: u64) -> anyhow::Result<u64> {
        let first = self.next_key;
        let end = first.checked_add(count).context("file keys exhausted")?;
        if end > self.persisted.key_ceiling {
            self.persist(Persisted {
                key_ceiling: end.saturating_add(KEY_STEP),
                ..self.persisted
            })
            .await?;
        }
        self.next_key = end;
        Ok(first)
    }

    /// Allocates a new volume id.
    pub async fn next_volume_id(&mut self) -> anyhow::Result<VolumeId> {
        let id = self
            .persisted
            .max_volume_id
            .checked_add(1)
            .context("volume ids exhausted")?;
        self.persist(Persisted {
            max_volume_id: id,
            ..self.persisted
        })
        .await?;
        Ok(id)
    }

    /// Raises the counters above what a volume server reports (a master whose state was lost
    /// or is older than the cluster still never reissues an id). Returns whether it changed.
    ///
    /// Reports are capped at [`MAX_OBSERVED_VOLUME_ID`] and [`MAX_OBSERVED_KEY`]: a volume id
    /// or key above them cannot come from this master's counting, only from a bogus heartbeat or
    /// a blob written directly under a made-up file id, and following it would exhaust the id
    /// space and fail every later assign.
    pub async fn observe(&mut self, volume_id: VolumeId, max_key: u64) -> anyhow::Result<bool> {
        let (volume_id, max_key) = cap_observed(volume_id, max_key);
        let mut next = self.persisted;
        if volume_id > next.max_volume_id {
            next.max_volume_id = volume_id;
        }
        if max_key >= self.next_key {
            self.next_key = max_key + 1;
        }
        if self.next_key > next.key_ceiling {
            next.key_ceiling = self.next_key.saturating_add(KEY_STEP);
        }
        if next != self.persisted {
            self.persist(next).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Caps what a volume server reports at [`MAX_OBSERVED_VOLUME_ID`] and [`MAX_OBSERVED_KEY`]
/// (see [`Sequencer::observe`]), warning when it had to.
pub fn cap_observed(volume_id: VolumeId, max_key: u64) -> (VolumeId, u64) {
    if volume_id > MAX_OBSERVED_VOLUME_ID || max_key > MAX_OBSERVED_KEY {
        tracing::warn!(
            volume_id,
            max_key,
            "a volume server reports ids beyond any this master hands out; capping them"
        );
    }
    (
        volume_id.min(MAX_OBSERVED_VOLUME_ID),
        max_key.min(MAX_OBSERVED_KEY),
    )
}

/// The state a master reports in heartbeats would need: `max_volume_id` and a ceiling above
/// `max_key`, so that a leader raised to it never reissues a reported key.
pub fn floor_of(volume_id: VolumeId, max_key: u64) -> Persisted {
    let (volume_id, max_key) = cap_observed(volume_id, max_key);
    Persisted {
        max_volume_id: volume_id,
        key_ceiling: max_key.saturating_add(1).max(1),
    }
}

/// Reads a state file; `None` when there is none.
pub fn read_file(path: &Path) -> anyhow::Result<Option<Persisted>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            Persisted::decode(&b).with_context(|| format!("read {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Reads the state in etcd and its mod revision (a fresh state and 0 when absent).
async fn read_etcd(term: &EtcdTerm) -> anyhow::Result<(Persisted, i64)> {
    let kv = term
        .client
        .get(term.state_key.clone())
        .await
        .context("read the master state from etcd")?;
    Ok(match kv {
        Some(kv) => (
            Persisted::decode(&kv.value).context("decode the master state in etcd")?,
            kv.mod_revision,
        ),
        None => (Persisted::default(), 0),
    })
}

/// Writes `next` if the state key is still at `mod_revision` (0: absent) and the leader key
/// is still the one created at `term.term`. The new mod revision, or `None` when a condition
/// failed.
async fn write_etcd(
    term: &EtcdTerm,
    mod_revision: i64,
    next: &Persisted,
) -> anyhow::Result<Option<i64>> {
    let txn = TxnRequest {
        compare: vec![
            Compare::new(
                term.state_key.clone(),
                CompareOp::Equal,
                CompareTarget::ModRevision(mod_revision),
            ),
            Compare::new(
                term.leader_key.clone(),
                CompareOp::Equal,
                CompareTarget::CreateRevision(term.term),
            ),
        ],
        success: vec![TxnOp::Put(PutRequest::new(
            term.state_key.clone(),
            next.encode().to_vec(),
        ))],
        failure: Vec::new(),
    };
    let resp = term
        .client
        .txn(&txn)
        .await
        .context("write the master state to etcd")?;
    if !resp.succeeded {
        // Still the leader? Then only the state key moved (our own lost answer); else fenced.
        let leader = term
            .client
            .get(term.leader_key.clone())
            .await
            .context("read the leader key from etcd")?;
        if leader.is_none_or(|kv| kv.create_revision != term.term) {
            bail!(
                "this master is no longer the leader: its term {} ended",
                term.term
            );
        }
        return Ok(None);
    }
    Ok(Some(resp.header.revision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_state_round_trip() {
        let p = Persisted {
            max_volume_id: 7,
            key_ceiling: 123_456,
        };
        assert_eq!(Persisted::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn test_state_flipped_byte_is_rejected() {
        let enc = Persisted {
            max_volume_id: 7,
            key_ceiling: 99,
        }
        .encode();
        for i in 0..enc.len() {
            let mut b = enc;
            b[i] ^= 0x10;
            assert!(Persisted::decode(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn test_state_torn_file_is_rejected() {
        let enc = Persisted::default().encode();
        for len in 0..enc.len() {
            assert!(Persisted::decode(&enc[..len]).is_err());
        }
    }

    #[tokio::test]
    async fn test_sequencer_never_reissues_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::load(dir.path()).unwrap();
        let a = s.next_keys(5).await.unwrap();
        let v1 = s.next_volume_id().await.unwrap();
        drop(s);
        // A "crash": reload from disk alone.
        let mut s = Sequencer::load(dir.path()).unwrap();
        let b = s.next_keys(1).await.unwrap();
        assert!(b >= a + 5, "key {b} reissued (first batch started at {a})");
        assert!(s.next_volume_id().await.unwrap() > v1);
    }

    #[tokio::test]
    async fn test_sequencer_observes_reported_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::load(dir.path()).unwrap();
        s.observe(9, 50_000).await.unwrap();
        assert_eq!(s.max_volume_id(), 9);
        assert!(s.next_keys(1).await.unwrap() > 50_000);
        let mut s = Sequencer::load(dir.path()).unwrap();
        assert!(s.next_keys(1).await.unwrap() > 50_000);
    }

    /// Found by `scripts/api-fuzz.sh`: a heartbeat reporting key `u64::MAX` overflowed
    /// (a panic), and a reported volume id `u32::MAX` would have failed every later grow.
    #[tokio::test]
    async fn test_sequencer_caps_absurd_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::load(dir.path()).unwrap();
        s.observe(VolumeId::MAX, u64::MAX).await.unwrap();
        assert_eq!(s.max_volume_id(), MAX_OBSERVED_VOLUME_ID);
        assert_eq!(s.next_keys(100_000).await.unwrap(), MAX_OBSERVED_KEY + 1);
        assert!(s.next_volume_id().await.unwrap() > MAX_OBSERVED_VOLUME_ID);
    }

    /// A term on `etcd`: creates the leader key (no lease) and returns the term it holds.
    async fn take_term(client: &Arc<EtcdClient>, who: &str) -> EtcdTerm {
        let leader_key = b"/t/leader".to_vec();
        let resp = client
            .txn(&TxnRequest {
                compare: vec![Compare::absent(leader_key.clone())],
                success: vec![TxnOp::Put(PutRequest::new(
                    leader_key.clone(),
                    who.as_bytes().to_vec(),
                ))],
                failure: Vec::new(),
            })
            .await
            .unwrap();
        assert!(resp.succeeded, "the leader key is free");
        EtcdTerm {
            client: client.clone(),
            state_key: b"/t/state".to_vec(),
            leader_key,
            term: resp.header.revision,
        }
    }

    fn etcd_client(etcd: &testkit::etcd::Etcd) -> Arc<EtcdClient> {
        common::tls::install_default_provider();
        let http = common::client::HttpClient::new(std::time::Duration::from_secs(5));
        Arc::new(EtcdClient::new(&[etcd.endpoint().to_owned()], http).unwrap())
    }

    /// Two leaders in turn on etcd: the second starts above everything the first reserved,
    /// the deposed first cannot raise the ceiling (fenced by its term), and the keys they
    /// handed out never overlap, the first's leftover block included.
    #[tokio::test]
    async fn test_etcd_terms_never_hand_out_a_key_twice() {
        let etcd = testkit::etcd::Etcd::start();
        let client = etcd_client(&etcd);
        let floor = Persisted {
            max_volume_id: 3,
            key_ceiling: 77,
        };
        let mut a = Sequencer::load_etcd(take_term(&client, "a").await, floor)
            .await
            .unwrap();
        assert_eq!(a.max_volume_id(), 3, "the floor is applied");
        let a_first = a.next_keys(10).await.unwrap();
        assert!(a_first >= 77);
        let a_vid = a.next_volume_id().await.unwrap();
        let a_ceiling = a.persisted().key_ceiling;
        // A's lease runs out (the key goes) and B wins the next term.
        client
            .delete_range(&common::etcd::DeleteRangeRequest::key(
                b"/t/leader".to_vec(),
            ))
            .await
            .unwrap();
        let mut b = Sequencer::load_etcd(take_term(&client, "b").await, Persisted::default())
            .await
            .unwrap();
        let b_first = b.next_keys(10).await.unwrap();
        assert!(b_first >= a_ceiling, "B starts above A's whole block");
        assert!(b.next_volume_id().await.unwrap() > a_vid);
        // A has not noticed: it may finish its block, all below B's keys...
        let a_more = a.next_keys(KEY_STEP - 20).await.unwrap();
        assert!(a_more + KEY_STEP - 20 <= b_first);
        // ...but raising the ceiling or growing a volume is refused.
        let e = a.next_keys(100).await.unwrap_err();
        assert!(format!("{e:#}").contains("no longer the leader"), "{e:#}");
        let e = a.next_volume_id().await.unwrap_err();
        assert!(format!("{e:#}").contains("no longer the leader"), "{e:#}");
        // What B wrote is what the next leader loads.
        let seen = read_etcd(&b_term(&client)).await.unwrap().0;
        assert_eq!(seen, b.persisted());
    }

    fn b_term(client: &Arc<EtcdClient>) -> EtcdTerm {
        EtcdTerm {
            client: client.clone(),
            state_key: b"/t/state".to_vec(),
            leader_key: b"/t/leader".to_vec(),
            term: 0,
        }
    }

    /// A leader whose write was applied but whose answer was lost (simulated: the state key
    /// moved on without it) re-reads the state and goes on above it, still the leader.
    #[tokio::test]
    async fn test_etcd_lost_answer_is_recovered_by_the_leader() {
        let etcd = testkit::etcd::Etcd::start();
        let client = etcd_client(&etcd);
        let term = take_term(&client, "a").await;
        let mut a = Sequencer::load_etcd(term, Persisted::default())
            .await
            .unwrap();
        let first = a.next_keys(1).await.unwrap();
        let ahead = Persisted {
            max_volume_id: 9,
            key_ceiling: 5 * KEY_STEP,
        };
        client
            .put(&PutRequest::new(
                b"/t/state".to_vec(),
                ahead.encode().to_vec(),
            ))
            .await
            .unwrap();
        let k = a.next_keys(2 * KEY_STEP).await.unwrap();
        assert!(k > first);
        assert_eq!(a.persisted().max_volume_id, 9, "the state it found is kept");
        assert!(a.persisted().key_ceiling >= 5 * KEY_STEP);
        assert_eq!(a.next_volume_id().await.unwrap(), 10);
    }

    /// A corrupt state in etcd refuses the term rather than guess.
    #[tokio::test]
    async fn test_etcd_corrupt_state_refuses() {
        let etcd = testkit::etcd::Etcd::start();
        let client = etcd_client(&etcd);
        client
            .put(&PutRequest::new(b"/t/state".to_vec(), b"garbage".to_vec()))
            .await
            .unwrap();
        let term = take_term(&client, "a").await;
        let e = Sequencer::load_etcd(term, Persisted::default())
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("decode the master state"),
            "{e:#}"
        );
    }

    proptest! {
        #[test]
        fn test_state_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Persisted::decode(&b);
        }
    }
}
