//! `make insights-head`: trains the local tier 1's head on its data files
//! (`shared/insights/data`) with the local embedding model and writes
//! `shared/insights/data/head.json`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let config = common::config::Config::load()?;
    let model = embed::LocalModel::load(Path::new(&config.embedding_model_dir))?;
    let head = assistant_tests::insights_eval::train_head(&model)?;
    let path = "shared/insights/data/head.json";
    std::fs::write(path, serde_json::to_string(&head)? + "\n")?;
    println!(
        "trained on {} sentences ({}), wrote {path}",
        insights::head::training_rows().len(),
        head.classes.join(", ")
    );
    Ok(())
}
