//! What a snapshot's freeze costs the replication thread when many
//! reservations are kept (open holds, and finished ones remembered for
//! retries), in one process (no gRPC, no disk).
//!
//! Three figures, each the replication thread's time:
//! - the freeze itself (`snapshot::freeze`);
//! - the batches of reserves applied right after it, while the frozen
//!   image is alive (a write may first copy what the image shares);
//! - the same batches with no image alive, for comparison.
//!
//! Run: `cargo run --release -p stockraft-bench --bin freeze_holds -- [RESERVATIONS]`
//! (default 2,000,000).

use std::time::{Duration, Instant};

/// The server's allocator, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use stockraft::inventory::command::{Reserve, SetOnHand};
use stockraft::inventory::{snapshot, Applied, Batch, Command, Inventory, Line};

/// Commands per batch, about what group commit makes under Stream load.
const BATCH_COMMANDS: usize = 1_000;
/// SKUs the holds are spread over, one node each.
const SKUS: usize = 100_000;
/// Batches timed after the freeze (and again without an image).
const BATCHES_TIMED: usize = 200;

struct Seeder {
    inventory: Inventory,
    index: u64,
    next_id: usize,
}

impl Seeder {
    fn apply(&mut self, commands: Vec<Command>) -> Duration {
        self.index += 1;
        let batch = Batch {
            stamp_ms: 1_000 + self.index,
            id_retention_ms: 24 * 3_600 * 1_000,
            id_retained_max: 20_000_000,
            commands,
        };
        let started = Instant::now();
        let answers = self.inventory.apply_batch(self.index, &batch);
        let took = started.elapsed();
        for answer in answers {
            let ok = matches!(
                answer,
                Applied::StockChange(Ok(_)) | Applied::Reserve(Ok(_))
            );
            assert!(ok, "a seeding command failed: {answer:?}");
        }
        took
    }

    fn reserves(&mut self, count: usize) -> anyhow::Result<Vec<Command>> {
        let mut commands = Vec::with_capacity(count);
        for _ in 0..count {
            let n = self.next_id;
            self.next_id += 1;
            let line = Line {
                sku: format!("SKU-{:06}", (n * 7_919) % SKUS),
                node: "dc-1".into(),
                qty: 1,
            };
            let reserve = Reserve::new(format!("order-{n:09}"), vec![line], 3_600_000)?;
            commands.push(Command::Reserve(reserve));
        }
        Ok(commands)
    }

    /// Applies `batches` batches of reserves: the slowest and the total.
    fn timed(&mut self, batches: usize) -> anyhow::Result<(Duration, Duration)> {
        let mut slowest = Duration::ZERO;
        let mut total = Duration::ZERO;
        for _ in 0..batches {
            let commands = self.reserves(BATCH_COMMANDS)?;
            let took = self.apply(commands);
            slowest = slowest.max(took);
            total += took;
        }
        Ok((slowest, total))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let holds: usize = args
        .get(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let mut seeder = Seeder {
        inventory: Inventory::new(),
        index: 0,
        next_id: 0,
    };
    let mut stock = Vec::with_capacity(SKUS);
    for s in 0..SKUS {
        let c = SetOnHand::new(
            format!("erp-{s}"),
            format!("SKU-{s:06}"),
            "dc-1".into(),
            1_000_000_000,
            None,
        )?;
        stock.push(Command::SetOnHand(c));
    }
    seeder.apply(stock);
    let started = Instant::now();
    let mut left = holds;
    while left > 0 {
        let count = left.min(4_096);
        let commands = seeder.reserves(count)?;
        seeder.apply(commands);
        left -= count;
    }
    println!(
        "{holds} open reservations over {SKUS} counters, made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (plain_max, plain_total) = seeder.timed(BATCHES_TIMED)?;
    let started = Instant::now();
    let alone = seeder.inventory.shared().reservations.freeze();
    let alone_ms = started.elapsed().as_secs_f64() * 1_000.0;
    drop(alone);
    println!("freeze of the reservations alone: {alone_ms:.2} ms");
    let started = Instant::now();
    let frozen = snapshot::freeze(&seeder.inventory);
    let freeze = started.elapsed();
    let (frozen_max, frozen_total) = seeder.timed(BATCHES_TIMED)?;
    drop(frozen);
    let (after_max, after_total) = seeder.timed(BATCHES_TIMED)?;
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!("freeze: {:.2} ms", ms(freeze));
    println!(
        "{BATCHES_TIMED} batches of {BATCH_COMMANDS} reserves: no image {:.1} ms (slowest {:.2} ms); \
         image alive {:.1} ms (slowest {:.2} ms); image dropped {:.1} ms (slowest {:.2} ms)",
        ms(plain_total),
        ms(plain_max),
        ms(frozen_total),
        ms(frozen_max),
        ms(after_total),
        ms(after_max)
    );
    Ok(())
}
