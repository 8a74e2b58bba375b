//! Memory and snapshot cost of a large inventory, in one process (no gRPC,
//! no disk): what ten million (sku, node) counters take resident, what
//! each retained transaction id adds, and how long a snapshot takes to write
//! and to load back.
//!
//! Run: `cargo run --release -p stockraft-bench --bin big_state -- [SKUS] [NODES_PER_SKU]`
//! (default 1,000,000 x 10). Figures are process RSS read from
//! /proc/self/status, so they include the allocator's own overhead.

use std::time::Instant;

/// The server's allocator, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use stockraft::inventory::command::{SetOnHand, SetSafetyStock};
use stockraft::inventory::{snapshot, Applied, Batch, Command, Inventory};

/// Commands per applied batch, about what group commit makes under load.
const BATCH_COMMANDS: usize = 4_096;

/// Resident memory in MiB (see [`stockraft_bench::rss_kib`]).
fn rss_mib() -> f64 {
    stockraft_bench::rss_kib() as f64 / 1024.0
}

fn apply_all(inventory: &mut Inventory, index: &mut u64, commands: Vec<Command>) {
    let mut batch = Vec::with_capacity(BATCH_COMMANDS);
    for command in commands {
        batch.push(command);
        if batch.len() == BATCH_COMMANDS {
            flush(inventory, index, &mut batch);
        }
    }
    flush(inventory, index, &mut batch);
}

fn flush(inventory: &mut Inventory, index: &mut u64, commands: &mut Vec<Command>) {
    if commands.is_empty() {
        return;
    }
    *index += 1;
    let batch = Batch {
        stamp_ms: 1_000 + *index,
        id_retention_ms: 24 * 3_600 * 1_000,
        id_retained_max: 20_000_000,
        commands: std::mem::take(commands),
    };
    for answer in inventory.apply_batch(*index, &batch) {
        let ok = matches!(
            answer,
            Applied::StockChange(Ok(_)) | Applied::SetSafetyStock(Ok(_))
        );
        assert!(ok, "a seeding command failed: {answer:?}");
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let skus: usize = args
        .get(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let nodes: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(10);
    let counters = skus * nodes;
    let base = rss_mib();
    println!("{skus} SKUs x {nodes} nodes = {counters} counters; RSS at start {base:.0} MiB");

    let mut inventory = Inventory::new();
    let mut index = 0u64;
    let built_s = add_counters(&mut inventory, &mut index, skus, nodes)?;
    let with_counters = rss_mib();
    println!(
        "counters: {:.0} MiB ({:.0} bytes per counter), built in {built_s:.1} s",
        with_counters - base,
        (with_counters - base) * 1_048_576.0 / counters as f64,
    );
    add_retained_ids(&mut inventory, &mut index, skus, nodes)?;
    let with_ids = rss_mib();
    println!(
        "plus {counters} retained transaction ids: {:.0} MiB ({:.0} bytes per id); total {:.0} MiB",
        with_ids - with_counters,
        (with_ids - with_counters) * 1_048_576.0 / counters as f64,
        with_ids - base
    );
    snapshot_and_restart(inventory, index, with_ids)
}

/// Counters alone: safety stock creates a counter and keeps no id.
/// Returns the seconds it took.
fn add_counters(
    inventory: &mut Inventory,
    index: &mut u64,
    skus: usize,
    nodes: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for s in 0..skus {
        let mut commands = Vec::with_capacity(nodes);
        for n in 0..nodes {
            let c = SetSafetyStock::new(format!("SKU-{s:07}"), format!("node-{n:03}"), 0)?;
            commands.push(Command::SetSafetyStock(c));
        }
        apply_all(inventory, index, commands);
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One retained transaction id per counter: an ERP load of every count.
fn add_retained_ids(
    inventory: &mut Inventory,
    index: &mut u64,
    skus: usize,
    nodes: usize,
) -> anyhow::Result<()> {
    for s in 0..skus {
        let mut commands = Vec::with_capacity(nodes);
        for n in 0..nodes {
            let c = SetOnHand::new(
                format!("erp-load-{s}-{n}"),
                format!("SKU-{s:07}"),
                format!("node-{n:03}"),
                100,
                None,
            )?;
            commands.push(Command::SetOnHand(c));
        }
        apply_all(inventory, index, commands);
    }
    Ok(())
}

/// A snapshot of it all: the freeze (on the replication thread), a write
/// while frozen, the encoding (elsewhere), and a restart from the image.
fn snapshot_and_restart(
    mut inventory: Inventory,
    mut index: u64,
    rss_before_mib: f64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let frozen = snapshot::freeze(&inventory);
    let frozen_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let with_frozen = rss_mib();
    // A write after freezing copies that SKU's counters (copy on write).
    apply_all(
        &mut inventory,
        &mut index,
        vec![Command::SetOnHand(SetOnHand::new(
            "erp-after-freeze".into(),
            "SKU-0000000".into(),
            "node-000".into(),
            7,
            None,
        )?)],
    );
    let started = Instant::now();
    let image = snapshot::write_frozen(&frozen);
    println!(
        "snapshot freeze (on the replication thread): {:.2} ms, +{:.0} MiB while frozen; \
         encode (elsewhere): {:.1} s, {} chunks, {:.0} MiB",
        frozen_ms,
        with_frozen - rss_before_mib,
        started.elapsed().as_secs_f64(),
        image.chunks.len(),
        image.byte_count() as f64 / 1_048_576.0
    );
    drop(frozen);
    drop(inventory);
    let started = Instant::now();
    let loaded = snapshot::read(&image, index)?;
    println!(
        "snapshot load (decode, rebuild, check invariants): {:.1} s, {} counters",
        started.elapsed().as_secs_f64(),
        loaded.stock().counter_count()
    );
    Ok(())
}
