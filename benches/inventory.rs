//! The state machine alone, and the log codec: how many reservations per
//! second one core applies, with no disk and no network.
//!
//! `cargo bench --bench inventory`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stockraft::inventory::codec::{decode_batch, encode_batch};
use stockraft::inventory::command::{Line, Reserve, SetOnHand};
use stockraft::inventory::{Batch, Command, Inventory};

const BATCH: usize = 1_000;

fn stocked(skus: usize) -> Inventory {
    let mut inventory = Inventory::new();
    let mut commands = Vec::new();
    for i in 0..skus {
        commands.push(Command::SetOnHand(
            SetOnHand::new(
                format!("seed-{i}"),
                format!("SKU-{i}"),
                "dc-1".into(),
                1_000_000_000,
                None,
            )
            .expect("valid"),
        ));
    }
    for (index, chunk) in (1..).zip(commands.chunks(10_000)) {
        let batch = Batch {
            stamp_ms: 1,
            id_retention_ms: 3_600_000,
            id_retained_max: 50_000_000,
            commands: chunk.to_vec(),
        };
        inventory.apply_batch(index, &batch);
    }
    inventory
}

fn reserve(id: u64, sku: usize) -> Command {
    Command::Reserve(
        Reserve::new(
            format!("order-{id}"),
            vec![Line {
                sku: format!("SKU-{sku}"),
                node: "dc-1".into(),
                qty: 1,
            }],
            600_000,
        )
        .expect("valid"),
    )
}

/// Batches of BATCH reserves, each followed by its commit in the next batch.
fn bench_reserve_commit(c: &mut Criterion, name: &str, skus: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(2 * BATCH as u64));
    group.sample_size(20);
    let mut inventory = stocked(skus);
    let mut next_id = 0u64;
    let mut index = 100u64;
    group.bench_function("reserve+commit", |b| {
        b.iter_batched(
            || {
                let first = next_id;
                next_id += BATCH as u64;
                let reserves: Vec<Command> = (first..next_id)
                    .map(|id| reserve(id, (id as usize * 7919) % skus))
                    .collect();
                let commits: Vec<Command> = (first..next_id)
                    .map(|id| Command::Consume {
                        reservation_id: format!("order-{id}"),
                    })
                    .collect();
                (reserves, commits)
            },
            |(reserves, commits)| {
                for commands in [reserves, commits] {
                    index += 1;
                    let batch = Batch {
                        stamp_ms: 1_000 + index,
                        id_retention_ms: 60_000,
                        id_retained_max: 1_000_000,
                        commands,
                    };
                    std::hint::black_box(inventory.apply_batch(index, &batch));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn state_machine(c: &mut Criterion) {
    bench_reserve_commit(c, "state_machine/many_counters", 100_000);
    bench_reserve_commit(c, "state_machine/one_hot_counter", 1);
}

fn codec(c: &mut Criterion) {
    let batch = Batch {
        stamp_ms: 1_700_000_000_000,
        id_retention_ms: 86_400_000,
        id_retained_max: 20_000_000,
        commands: (0..BATCH as u64)
            .map(|id| reserve(id, id as usize))
            .collect(),
    };
    let bytes = encode_batch(&batch);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode_batch_1000_reserves", |b| {
        b.iter(|| std::hint::black_box(encode_batch(&batch)))
    });
    group.bench_function("decode_batch_1000_reserves", |b| {
        b.iter(|| std::hint::black_box(decode_batch(&bytes).expect("decodes")))
    });
    group.finish();
}

criterion_group!(benches, state_machine, codec);
criterion_main!(benches);
