//! Quick embedder timing: `cargo run -p assistant-embed --release --example embed_speed`.
//! (`make bench` measures the same beside ONNX Runtime.)
use assistant_embed::LocalModel;
use std::time::Instant;

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/assistant/models/all-MiniLM-L6-v2");
    let model = LocalModel::load(&dir).unwrap();
    let texts = [
        (
            "short",
            "Can we move Tuesday's meeting to Thursday afternoon with the whole team?".to_string(),
        ),
        (
            "medium",
            "Client discussed rebalancing, tax-loss harvesting and estate questions. ".repeat(3),
        ),
        (
            "long",
            "Client discussed rebalancing, tax-loss harvesting and estate questions. ".repeat(20),
        ),
    ];
    for (name, text) in texts {
        let tokens = model.tokenizer().encode(text.as_str(), true).unwrap().len();
        for batch in [1usize, 8, 32] {
            let batch_texts = vec![text.clone(); batch];
            model.embed(&batch_texts).unwrap();
            let started = Instant::now();
            let mut done = 0;
            while started.elapsed().as_secs_f64() < 2.0 {
                model.embed(&batch_texts).unwrap();
                done += batch;
            }
            let per_text = started.elapsed().as_secs_f64() / done as f64;
            println!(
                "{name} ({tokens} tokens) batch {batch:>2}: {:.2} ms/text, {:.1} texts/s",
                per_text * 1e3,
                1.0 / per_text
            );
        }
    }
}
