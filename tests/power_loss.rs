//! Real power loss: every member's data dir sits on a filesystem that
//! forgets what was not synced (`common/lossyfs.rs`, FUSE), so a cut keeps
//! only what the servers fsynced, unlike a SIGKILL, after which the OS page
//! cache still holds every write. Under load from checkout clients, every
//! server is SIGKILLed at a random moment, every disk loses its unsynced
//! data at that same instant, the disks are mounted anew and the servers
//! restarted, several times over: every acknowledged answer must still be
//! there, applied exactly once, and the replicas must converge.
//!
//! The mutation test runs the same scenario with the log's sync removed
//! (the `sync::skip` crash point) and requires the same check to report
//! lost acknowledged writes: the check can fail.
//!
//! Mounting needs /dev/fuse and root (CI has both); without them these
//! tests fail, saying so, rather than pass without testing anything.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::cluster::Cluster;
use common::lossyfs::{CutReport, LossyMount};
use common::workload::{audit_node, seed_stock, start_clients_prefixed, Finding, Ledger};

/// Checkout clients during each cycle.
const CLIENTS: usize = 4;
/// Units of each SKU: enough that the clients never run out over all the
/// cycles, so that every cycle has new acknowledged answers to check.
const STOCK: i64 = 100_000;

/// A cluster whose members each keep their data dir on a lossy disk of
/// their own.
struct Site {
    cluster: Cluster,
    disks: BTreeMap<u64, LossyMount>,
    /// `FAILPOINTS` for every start of every member.
    failpoints: Option<String>,
    // Dropped last: the mount points, once the disks are unmounted.
    _mount_points: tempfile::TempDir,
}

impl Site {
    /// Mounts a lossy disk per member and starts `n` founding members on
    /// them. Panics, saying why, when FUSE cannot be mounted.
    fn start(n: u64, extra: &[&str], failpoints: Option<&str>) -> Site {
        let mount_points = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster::founding(n, extra);
        let mut disks = BTreeMap::new();
        for id in 1..=n {
            let point = mount_points.path().join(format!("disk-{id}"));
            std::fs::create_dir(&point).expect("mount point");
            let disk = LossyMount::mount(&point).unwrap_or_else(|e| panic!("{e:#}"));
            cluster.nodes.get_mut(&id).expect("member").dir = point.join("data");
            disks.insert(id, disk);
        }
        let mut site = Site {
            cluster,
            disks,
            failpoints: failpoints.map(str::to_string),
            _mount_points: mount_points,
        };
        site.spawn_all();
        site
    }

    fn ids(&self) -> Vec<u64> {
        self.cluster.nodes.keys().copied().collect()
    }

    fn spawn_all(&mut self) {
        for id in self.ids() {
            if let Some(points) = &self.failpoints {
                self.cluster.nodes.get_mut(&id).expect("member").env =
                    vec![("FAILPOINTS".into(), points.clone())];
            }
            self.cluster.spawn(id);
        }
    }

    /// The site loses power: SIGKILL to every server at once (all signals
    /// sent before any exit is waited for), then every disk drops what was
    /// not synced, then the disks are mounted anew. Returns what each cut
    /// dropped.
    fn power_cut(&mut self) -> Result<Vec<CutReport>> {
        for node in self.cluster.nodes.values_mut() {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
            }
        }
        for node in self.cluster.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
        let reports = self.disks.values().map(LossyMount::cut).collect();
        for disk in self.disks.values_mut() {
            disk.remount()?;
        }
        Ok(reports)
    }
}

/// What one run of the scenario saw.
#[derive(Default)]
struct Outcome {
    /// Per cycle: acknowledged answers checked after that cut.
    acks_checked: Vec<usize>,
    /// What the checks found wrong (the run stops at the first cycle with
    /// any).
    findings: Vec<Finding>,
}

/// Answers the ledger holds as acknowledged: reserves, commits, releases.
fn acked(ledger: &Ledger) -> usize {
    let records = ledger.records.lock().expect("ledger");
    records
        .values()
        .map(|r| r.reserve_acked as usize + r.commit_acked as usize + r.release_acked as usize)
        .sum()
}

/// `cycles` times: clients on every member, a site power cut at a random
/// moment, a restart, the clients' retries finished, then every member
/// checked against one ledger kept over all cycles. Errors are the
/// harness failing (no leader, no convergence); what the checks find is in
/// the outcome. Stops after the first cycle that found anything.
async fn run_cycles(site: &mut Site, cycles: usize) -> Result<Outcome> {
    let leader = site.cluster.wait_leader(Duration::from_secs(30)).await?;
    seed_stock(&site.cluster, leader, STOCK).await;
    let ledger = Arc::new(Ledger::with_stock(STOCK));
    let mut outcome = Outcome::default();
    for cycle in 0..cycles {
        outcome.findings = cut_under_load(site, &ledger, cycle).await?;
        outcome.acks_checked.push(acked(&ledger));
        if !outcome.findings.is_empty() {
            break;
        }
    }
    Ok(outcome)
}

/// One cycle of [`run_cycles`]; returns what the checks found.
async fn cut_under_load(
    site: &mut Site,
    ledger: &Arc<Ledger>,
    cycle: usize,
) -> Result<Vec<Finding>> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = site.ids().iter().map(|id| site.cluster.addr(*id)).collect();
    let prefix = format!("p{cycle}-");
    let tasks = start_clients_prefixed(
        &prefix,
        addrs,
        CLIENTS,
        ledger.clone(),
        stop.clone(),
        started,
    );
    let load_ms = rand::random_range(600..1_500);
    tokio::time::sleep(Duration::from_millis(load_ms)).await;
    let acks_at_cut = acked(ledger);
    let reports = tokio::task::block_in_place(|| site.power_cut())?;
    site.spawn_all();
    site.cluster.wait_leader(Duration::from_secs(30)).await?;
    // The clients finish the calls the cut interrupted (retrying the same
    // ids: nothing may apply twice) and go on a little.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut findings = Vec::new();
    for task in tasks {
        if let Err(e) = task.await {
            findings.push(Finding::Wrong(format!("a client failed: {e}")));
        }
    }
    let ids = site.ids();
    site.cluster
        .wait_converged(&ids, Duration::from_secs(30))
        .await
        .context("after the cut")?;
    for id in ids {
        findings.extend(audit_node(&site.cluster, id, ledger).await);
    }
    eprintln!(
        "cycle {cycle}: cut after {load_ms} ms with {acks_at_cut} answers acknowledged, \
         {} checked after the restart, {:.1} s; cuts: {reports:?}",
        acked(ledger),
        started.elapsed().as_secs_f32()
    );
    Ok(findings)
}

/// The scenario on `members` members for `cycles` cuts, asserting that
/// nothing was found and that each cut had acknowledged answers to check.
async fn power_loss(members: u64, extra: &[&str], cycles: usize) {
    let started = Instant::now();
    let mut site = Site::start(members, extra, None);
    let outcome = run_cycles(&mut site, cycles)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let findings: Vec<String> = outcome.findings.iter().map(|f| f.to_string()).collect();
    assert!(
        findings.is_empty(),
        "{} findings after a power cut, the first ones:\n{}\n{}",
        findings.len(),
        findings[..findings.len().min(20)].join("\n"),
        site.cluster.all_logs()
    );
    assert_eq!(outcome.acks_checked.len(), cycles);
    let mut before = 0;
    for (cycle, checked) in outcome.acks_checked.iter().enumerate() {
        assert!(
            *checked > before + 10,
            "cycle {cycle}: too few new acknowledged answers to prove anything ({checked})"
        );
        before = *checked;
    }
    let syncs: Vec<u64> = site.disks.values().map(LossyMount::syncs).collect();
    eprintln!(
        "{members} member(s), {cycles} cuts in {:?}; acknowledged answers checked after each: \
         {:?}; fsyncs per disk: {syncs:?}",
        started.elapsed(),
        outcome.acks_checked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_loses_power_and_keeps_every_acknowledged_write() {
    power_loss(1, &[], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_power_cut_takes_every_member_and_loses_nothing_acknowledged() {
    power_loss(3, common::SNAPSHOT_OFTEN, 3).await;
}

/// The mutation check: with every sync of the log removed (the
/// `sync::skip` crash point, on every start), the same scenario's check
/// reports acknowledged writes lost. So the real test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_log_sync_a_power_cut_loses_acknowledged_writes() {
    let mut site = Site::start(1, &[], Some("sync::skip=return"));
    let outcome = run_cycles(&mut site, 3)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        outcome
            .findings
            .iter()
            .any(|f| matches!(f, Finding::AckLost(_))),
        "with the log's sync removed, no acknowledged write was lost after {} cuts \
         ({:?} answers checked): the check cannot tell\n{}",
        outcome.acks_checked.len(),
        outcome.acks_checked,
        site.cluster.all_logs()
    );
    let lost = outcome
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::AckLost(_)))
        .count();
    eprintln!(
        "without the log sync: {lost} acknowledged answers lost at cut {}",
        outcome.acks_checked.len()
    );
}

/// The filesystem itself: what was synced survives a cut, what was not
/// is gone, and names follow the last sync of anything.
#[test]
fn the_lossy_disk_keeps_synced_data_and_drops_the_rest() {
    use std::fs::{self, File, OpenOptions};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let point = tempfile::tempdir().expect("temp dir");
    let mut disk = LossyMount::mount(point.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = disk.path().join("d");
    fs::create_dir(&dir).unwrap();
    let mut kept = File::create(dir.join("kept")).unwrap();
    kept.write_all(b"synced").unwrap();
    kept.sync_data().unwrap();
    kept.write_all(b" and then not").unwrap();
    let mut cut_short = File::create(dir.join("cut-short")).unwrap();
    cut_short.write_all(b"0123456789").unwrap();
    cut_short.sync_all().unwrap();
    cut_short.set_len(4).unwrap();
    File::create(dir.join("never-synced"))
        .unwrap()
        .write_all(b"lost")
        .unwrap();
    // Preallocation (RocksDB's, on its log) grows the file, unsynced.
    let grown = File::create(dir.join("grown")).unwrap();
    // SAFETY: a valid open descriptor; fallocate writes no memory of ours.
    let allocated = unsafe { libc::fallocate(grown.as_raw_fd(), 0, 0, 8192) };
    assert_eq!(allocated, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(grown.metadata().unwrap().len(), 8192);
    // The atomic replace RocksDB does for CURRENT: write, sync, rename
    // over, sync the directory.
    fs::write(dir.join("current"), b"old").unwrap();
    fs::write(dir.join("current.tmp"), b"new").unwrap();
    File::open(dir.join("current.tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(dir.join("current.tmp"), dir.join("current")).unwrap();
    File::open(&dir).unwrap().sync_all().unwrap();
    // After the last sync of anything: names not committed.
    File::create(dir.join("created-late"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    fs::rename(dir.join("kept"), dir.join("renamed-late")).unwrap();
    fs::remove_file(dir.join("current")).unwrap();
    drop((kept, cut_short, grown));

    let report = disk.cut();
    assert!(
        fs::read(dir.join("never-synced")).is_err(),
        "the power is off until the remount"
    );
    disk.remount().unwrap();
    assert!(
        report.namespace_reverted && report.files_reverted == 4,
        "{report:?}"
    );
    assert_eq!(fs::read(dir.join("kept")).unwrap(), b"synced");
    assert_eq!(fs::read(dir.join("cut-short")).unwrap(), b"0123456789");
    assert_eq!(fs::read(dir.join("never-synced")).unwrap(), b"");
    assert_eq!(fs::read(dir.join("grown")).unwrap(), b"");
    assert_eq!(fs::read(dir.join("current")).unwrap(), b"new");
    assert!(!dir.join("created-late").exists());
    assert!(!dir.join("renamed-late").exists());
    assert!(!dir.join("current.tmp").exists());

    // Writing goes on after the remount; a second cut with nothing new
    // synced keeps the same state.
    let mut more = OpenOptions::new()
        .append(true)
        .open(dir.join("kept"))
        .unwrap();
    more.write_all(b"!").unwrap();
    drop(more);
    disk.cut();
    disk.remount().unwrap();
    assert_eq!(fs::read(dir.join("kept")).unwrap(), b"synced");
}
