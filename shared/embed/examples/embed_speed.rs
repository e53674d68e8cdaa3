//! Quick embedder timing: `cargo run -p assistant-embed --example embed_speed [--release]`.
use assistant_embed::LocalModel;
use std::time::Instant;

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/assistant/models/all-MiniLM-L6-v2");
    let model = LocalModel::load(&dir).unwrap();
    let text =
        "Client discussed rebalancing, tax-loss harvesting and estate questions. ".repeat(20);
    for batch in [1usize, 8, 32] {
        let texts = vec![text.clone(); batch];
        let started = Instant::now();
        let runs = 3;
        for _ in 0..runs {
            model.embed(&texts).unwrap();
        }
        let per_text = started.elapsed().as_secs_f64() / (runs * batch) as f64;
        println!(
            "batch {batch:>2}: {:.1} ms/text, {:.1} texts/s",
            per_text * 1e3,
            1.0 / per_text
        );
    }
}
