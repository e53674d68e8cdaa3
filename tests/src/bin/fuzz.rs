//! `make fuzz` (`cargo run --release -p assistant-tests --bin fuzz [-- target ...]`): a million
//! generated inputs per target by default (`FUZZ_INPUTS`), from `FUZZ_SEED` (default: the
//! clock, printed), keeping what it finds in `tests/fuzz/`. Exits non-zero on any panic or
//! broken property.

use assistant_tests::fuzz::{TARGETS, run};
use std::path::PathBuf;

fn main() {
    let inputs: u64 = std::env::var("FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    println!(
        "fuzz: {inputs} inputs per target, FUZZ_SEED={seed}, kept in {}",
        root.display()
    );
    let mut failed = false;
    for target in TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == target.name) {
            continue;
        }
        let summary = run(target, inputs, seed, Some(&root));
        println!("{summary}");
        failed |= summary.panics > 0 || summary.broken > 0;
    }
    if failed {
        eprintln!(
            "fuzz: failures; their inputs are in {}",
            root.join("crashes").display()
        );
        std::process::exit(1);
    }
}
