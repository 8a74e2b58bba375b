//! Who is on the other end of the peer transport: a member of this
//! cluster, running on the data dir it has always had.
//!
//! A certificate says which member id a peer is; it does not say which
//! cluster that member belongs to, nor whether its data survived. Two
//! checks on every batch and snapshot a member receives close those gaps:
//!
//! - **The cluster id.** The first leader of a cluster commits 16 random
//!   bytes to the log (`replica::membership::ClusterId`); every member
//!   stores them with the membership and sends them with every batch. A
//!   member of another cluster (same ids, even the same addresses, another
//!   id) is refused. A sender that knows no id yet (a founding member that
//!   has not applied it, a member joining) is not: the log will tell it.
//! - **The incarnation.** Each data dir draws a random number when it is
//!   created and sends it with every batch. Each member records the first
//!   number it receives from each fellow member and refuses any other
//!   after that: a member whose data dir was wiped forgot its votes and
//!   the entries it acknowledged, and letting it vote or count towards a
//!   quorum again could elect two leaders in one term or lose a committed
//!   entry. It must be removed and added again (`stockraft cluster
//!   remove`, `cluster add`, `serve --join`): a removal forgets what was
//!   recorded of it.
//!
//! Both are kept in one small file in the data dir, written whole and
//! synced before a first sighting is believed. A rebuild after damage
//! (`server::rebuild`) keeps the file: it is a deliberate, safe return.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

use crate::proto::internal as pb;
use crate::replica::membership::{cluster_id_hex, cluster_id_of, ClusterId};

/// The file's name in the data dir.
pub(crate) const IDENTITY_FILE: &str = "stockraft-identity";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
}

/// Why a peer's traffic is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("member {from} belongs to cluster {theirs}, this is cluster {ours}")]
    OtherCluster {
        from: u64,
        theirs: String,
        ours: String,
    },
    #[error("member {from} runs on another data dir than before (wiped or replaced?): it lost its votes and log, so it is refused; remove it (stockraft cluster remove {from}) and add it again")]
    Replaced { from: u64 },
    #[error("member {from} sent no identity")]
    Missing { from: u64 },
    #[error("cannot record member {from}'s identity: {reason}")]
    Unrecorded { from: u64, reason: String },
}

impl Refusal {
    /// The metric label of `stockraft_peer_messages_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::OtherCluster { .. } => "other_cluster",
            Refusal::Replaced { .. } => "member_replaced",
            Refusal::Missing { .. } => "no_identity",
            Refusal::Unrecorded { .. } => "identity_unrecorded",
        }
    }
}

#[derive(Debug, Default)]
struct Known {
    cluster_id: Option<ClusterId>,
    members: BTreeSet<u64>,
    /// Member id to the incarnation first received from it.
    seen: BTreeMap<u64, u64>,
    /// Refusals already logged, so a peer retrying every few milliseconds
    /// logs once (the metric counts every one).
    logged: BTreeSet<(u64, &'static str)>,
}

/// This member's identity and what it knows of its fellow members'.
#[derive(Debug)]
pub struct Identity {
    incarnation: u64,
    path: PathBuf,
    known: Mutex<Known>,
}

impl Identity {
    /// Reads the identity file in `data_dir`, or makes a new incarnation
    /// when the store is new (`fresh_store`) or the file is missing.
    pub fn open(data_dir: &Path, fresh_store: bool) -> Result<Identity, IdentityError> {
        let path = data_dir.join(IDENTITY_FILE);
        let read = if fresh_store { None } else { read_file(&path)? };
        let (incarnation, seen) = match read {
            Some(found) => found,
            None => (new_incarnation(), BTreeMap::new()),
        };
        let identity = Identity {
            incarnation,
            path,
            known: Mutex::new(Known {
                seen,
                ..Known::default()
            }),
        };
        identity.write(&identity.lock().seen)?;
        Ok(identity)
    }

    /// What this member sends with every batch and snapshot.
    pub fn sender(&self) -> pb::Sender {
        pb::Sender {
            cluster_id: self
                .lock()
                .cluster_id
                .map(|id| id.to_vec())
                .unwrap_or_default(),
            incarnation: self.incarnation,
        }
    }

    pub fn set_cluster_id(&self, cluster_id: Option<ClusterId>) {
        self.lock().cluster_id = cluster_id;
    }

    /// The current members: only theirs are recorded on first sight (a
    /// stranger's claim must not take a member's place).
    pub(crate) fn set_members(&self, members: impl IntoIterator<Item = u64>) {
        self.lock().members = members.into_iter().collect();
    }

    /// Whether `id` is a current member (only members' clocks are taken
    /// in, so a stranger cannot grow the per-peer metrics).
    pub(crate) fn is_member(&self, id: u64) -> bool {
        self.lock().members.contains(&id)
    }

    /// Forgets what was recorded of removed members: whoever is added
    /// under their ids later is someone new.
    pub(crate) fn forget(&self, removed: &[u64]) -> Result<(), IdentityError> {
        let mut known = self.lock();
        let mut changed = false;
        for id in removed {
            changed |= known.seen.remove(id).is_some();
            known.logged.retain(|(from, _)| from != id);
        }
        if changed {
            self.write(&known.seen)?;
        }
        Ok(())
    }

    /// Checks what member `from` says of itself; records its incarnation
    /// the first time a member is heard from.
    pub fn check(&self, from: u64, sender: Option<&pb::Sender>) -> Result<(), Refusal> {
        let result = self.admit(from, sender);
        if let Err(refusal) = &result {
            metrics::counter!("stockraft_peer_messages_refused_total", "reason" => refusal.reason())
                .increment(1);
            if self.lock().logged.insert((from, refusal.reason())) {
                tracing::warn!(from, "refused a peer: {refusal}");
            }
        }
        result
    }

    fn admit(&self, from: u64, sender: Option<&pb::Sender>) -> Result<(), Refusal> {
        let Some(sender) = sender else {
            return Err(Refusal::Missing { from });
        };
        let mut known = self.lock();
        if let (Some(ours), Some(theirs)) = (known.cluster_id, cluster_id_of(&sender.cluster_id)) {
            if ours != theirs {
                return Err(Refusal::OtherCluster {
                    from,
                    theirs: cluster_id_hex(&theirs),
                    ours: cluster_id_hex(&ours),
                });
            }
        }
        match known.seen.get(&from) {
            Some(&seen) if seen == sender.incarnation => Ok(()),
            Some(_) => Err(Refusal::Replaced { from }),
            None if !known.members.contains(&from) => Ok(()),
            None => {
                known.seen.insert(from, sender.incarnation);
                self.write(&known.seen).map_err(|e| Refusal::Unrecorded {
                    from,
                    reason: e.to_string(),
                })?;
                tracing::info!(from, "recorded a member's data dir");
                Ok(())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // A panic while holding it cannot leave `Known` half-changed (each
        // change is one insert or remove), so a poisoned lock is usable.
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the file whole (a temporary, synced, renamed over, the
    /// directory synced): a crash leaves the old file or the new one.
    fn write(&self, seen: &BTreeMap<u64, u64>) -> Result<(), IdentityError> {
        let mut text = format!("incarnation {:016x}\n", self.incarnation);
        for (id, incarnation) in seen {
            text.push_str(&format!("seen {id} {incarnation:016x}\n"));
        }
        let io = |e: std::io::Error| IdentityError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let temporary = self.path.with_extension("tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&temporary).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

/// A new random incarnation (never 0, which a missing field reads as).
fn new_incarnation() -> u64 {
    loop {
        let drawn: u64 = rand::random();
        if drawn != 0 {
            return drawn;
        }
    }
}

type Parsed = (u64, BTreeMap<u64, u64>);

fn read_file(path: &Path) -> Result<Option<Parsed>, IdentityError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(IdentityError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|reason| IdentityError::Damaged {
            path: path.display().to_string(),
            reason,
        })
}

fn parse(text: &str) -> Result<Parsed, String> {
    let mut incarnation = None;
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["incarnation", hex] => incarnation = Some(parse_hex(hex)?),
            ["seen", id, hex] => {
                let id: u64 = id
                    .parse()
                    .map_err(|_| format!("bad member id in {line:?}"))?;
                seen.insert(id, parse_hex(hex)?);
            }
            [] => {}
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let incarnation = incarnation.ok_or("no incarnation line")?;
    Ok((incarnation, seen))
}

fn parse_hex(hex: &str) -> Result<u64, String> {
    u64::from_str_radix(hex, 16).map_err(|_| format!("bad number {hex:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(cluster: Option<ClusterId>, incarnation: u64) -> pb::Sender {
        pb::Sender {
            cluster_id: cluster.map(|c| c.to_vec()).unwrap_or_default(),
            incarnation,
        }
    }

    #[test]
    fn another_cluster_is_refused_once_both_know_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(dir.path(), true).unwrap();
        identity.set_members([1, 2]);
        let (ours, theirs) = ([1u8; 16], [2u8; 16]);
        // Neither knows an id yet, then only one does: admitted.
        assert_eq!(identity.check(2, Some(&sender(Some(theirs), 7))), Ok(()));
        identity.set_cluster_id(Some(ours));
        assert_eq!(identity.check(2, Some(&sender(None, 7))), Ok(()));
        let refused = identity.check(2, Some(&sender(Some(theirs), 7)));
        assert_eq!(refused.unwrap_err().reason(), "other_cluster");
        assert_eq!(identity.check(2, Some(&sender(Some(ours), 7))), Ok(()));
        assert_eq!(identity.check(2, None).unwrap_err().reason(), "no_identity");
    }

    #[test]
    fn a_member_back_on_a_new_data_dir_is_refused_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(dir.path(), true).unwrap();
        identity.set_members([1, 2, 3]);
        assert_eq!(identity.check(3, Some(&sender(None, 30))), Ok(()));
        // A stranger is admitted (admission decides what it may send) but
        // never recorded: it cannot take a member's place.
        assert_eq!(identity.check(9, Some(&sender(None, 90))), Ok(()));
        // What was recorded survives a restart.
        drop(identity);
        let identity = Identity::open(dir.path(), false).unwrap();
        identity.set_members([1, 2, 3]);
        let refused = identity.check(3, Some(&sender(None, 31)));
        assert_eq!(refused.unwrap_err().reason(), "member_replaced");
        // Removed: whoever comes back as member 3 is new.
        identity.forget(&[3]).unwrap();
        assert_eq!(identity.check(3, Some(&sender(None, 31))), Ok(()));
        assert_eq!(
            identity
                .check(3, Some(&sender(None, 30)))
                .unwrap_err()
                .reason(),
            "member_replaced"
        );
    }

    #[test]
    fn a_new_store_gets_a_new_incarnation_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::open(dir.path(), true)
            .unwrap()
            .sender()
            .incarnation;
        let again = Identity::open(dir.path(), false)
            .unwrap()
            .sender()
            .incarnation;
        assert_eq!(first, again);
        let wiped = Identity::open(dir.path(), true)
            .unwrap()
            .sender()
            .incarnation;
        assert_ne!(first, wiped);
        assert_ne!(wiped, 0);
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "seen x 1\n").unwrap();
        let err = Identity::open(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
