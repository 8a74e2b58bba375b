//! The fuzz targets' regression suite (issue 28, item 9): every input a
//! fuzzer found a bug with is kept in fuzz/regressions/<target>/ and
//! replayed here, under plain `cargo test`, through the same checks the
//! fuzz target runs (fuzz/harness.rs). So a bug fixed once stays fixed
//! without cargo-fuzz, nightly or a sanitizer. The seed corpus is checked
//! too: each seed must pass its target's checks, or fuzzing would start
//! from a crash.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation past which an input is a finding, as
/// `-malloc_limit_mb=1024` makes it one under libFuzzer: an unbounded
/// allocation often succeeds here (memory is only reserved), so it is
/// measured rather than left to fail.
const ALLOCATION_BYTES_MAX: usize = 1 << 30;

/// The system allocator, noting the largest allocation asked of it.
struct Measured;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

static REPLAYING: std::sync::Mutex<()> = std::sync::Mutex::new(());

// SAFETY: every call is handed to the system allocator unchanged.
unsafe impl GlobalAlloc for Measured {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Measured = Measured;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file in `dir`, sorted; none when the directory does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on `input`, naming the file when it panics or makes an
/// allocation past [`ALLOCATION_BYTES_MAX`].
fn replay(target: &str, file: &Path, check: fn(&[u8])) {
    let input = std::fs::read(file).expect("a regression input is readable");
    // One replay at a time: the largest allocation is the process's.
    let _alone = REPLAYING.lock().unwrap_or_else(|e| e.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    let outcome = std::panic::catch_unwind(|| check(&input));
    assert!(
        outcome.is_ok(),
        "{target}: {} fails again (see the panic above)",
        file.display()
    );
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= ALLOCATION_BYTES_MAX,
        "{target}: {} allocated {largest} bytes at once",
        file.display()
    );
}

#[test]
fn every_kept_crash_input_passes_its_target() {
    let mut replayed = 0;
    for (target, check) in harness::TARGETS {
        for file in files_in(&fuzz_dir().join("regressions").join(target)) {
            replay(target, &file, *check);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} regression inputs");
}

#[test]
fn every_committed_seed_passes_its_target() {
    for (target, check) in harness::TARGETS {
        let files = files_in(&fuzz_dir().join("corpus").join(target));
        assert!(
            !files.is_empty(),
            "fuzz/corpus/{target}/ has no seed; run the ignored write_seed_corpus"
        );
        for file in files {
            replay(target, &file, *check);
        }
    }
}

#[test]
fn the_seed_generator_writes_valid_inputs_for_every_target() {
    let seeds = harness::seeds();
    for (target, check) in harness::TARGETS {
        let mine: Vec<_> = seeds.iter().filter(|(t, _, _)| t == target).collect();
        assert!(!mine.is_empty(), "no seed for {target}");
        for (_, name, bytes) in mine {
            let outcome = std::panic::catch_unwind(|| check(bytes));
            assert!(outcome.is_ok(), "{target}: seed {name} fails its target");
        }
    }
}

/// Writes the seed corpus to fuzz/corpus/<target>/:
/// `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus/; run by hand when the formats change"]
fn write_seed_corpus() {
    for (target, name, bytes) in harness::seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
}
