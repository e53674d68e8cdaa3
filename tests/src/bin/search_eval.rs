//! `cargo run -p assistant-tests --bin search-eval [-- --held-out] [--misses]`: loads the search
//! evaluation set into a fresh database and prints each ranking's quality on the tuning
//! questions (or, with `--held-out`, on the held-out third too). `make bench` prints the same
//! table; this is the quick loop for working on ranking.

use assistant_tests::bench::Env;
use assistant_tests::search_eval::{self, RANKINGS};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let held_out = args.iter().any(|a| a == "--held-out");
    let misses = args.iter().any(|a| a == "--misses");
    let env = Env::prepare_with("assistant_search_eval", "seval", |_| {}).await?;
    let cancel = CancellationToken::new();
    let service = tokio::spawn(embedding::run(env.config.clone(), cancel.clone()));
    let user = db::users::ensure(&env.db, "dana@whitfieldwealth.com").await?;
    let docs = search_eval::corpus()?;
    let labels = search_eval::load(
        &env.db,
        &env.config,
        embedding::embedder(&env.config)?,
        user,
        &docs,
    )
    .await?;
    let questions = search_eval::questions()?;
    let searcher = actions::search::Searcher::new(env.db.clone(), env.bus.clone(), &env.config);
    // The embedding service answers queries once it has subscribed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let splits: Vec<(&str, Vec<&search_eval::Question>)> = {
        let tune = questions.iter().filter(|q| !q.held_out).collect();
        let mut s = vec![("tuning", tune)];
        if held_out {
            s.push((
                "held-out",
                questions.iter().filter(|q| q.held_out).collect(),
            ));
            s.push(("all", questions.iter().collect()));
        }
        s
    };
    println!("{} documents, {} questions", docs.len(), questions.len());
    if let Ok(q) = std::env::var("EVAL_Q") {
        let found = searcher
            .search(
                user,
                actions::search::SearchRequest {
                    q,
                    ..Default::default()
                },
            )
            .await?;
        println!("{:?}", found.understood.describe());
        for h in found.hits {
            println!(
                "{:.4} {} {:?}",
                h.score, labels[&h.document_id], h.occurred_at
            );
        }
        return Ok(());
    }
    for (split, qs) in &splits {
        for (name, ranking) in RANKINGS {
            // Warm up, then measure.
            search_eval::run(&searcher, user, &labels, &qs[..qs.len().min(5)], ranking).await?;
            let outcomes = search_eval::run(&searcher, user, &labels, qs, ranking).await?;
            let m = search_eval::score(qs, &outcomes);
            println!(
                "{split:9} {name:17} n={:3} R@5 {:.3} R@10 {:.3} MRR {:.3} nDCG@10 {:.3} p50 {:.1} ms p99 {:.1} ms",
                m.questions,
                m.recall5,
                m.recall10,
                m.mrr,
                m.ndcg10,
                m.p50.as_secs_f64() * 1e3,
                m.p99.as_secs_f64() * 1e3
            );
            if misses && *split == "tuning" && name.starts_with("default") {
                for (q, o) in qs.iter().zip(&outcomes) {
                    let first = o.ranked.iter().position(|l| q.relevant.contains(l));
                    if first.is_none_or(|r| r > 0) {
                        println!(
                            "  [{}] {:?} want {:?} first@{:?} got {:?} {:?}",
                            q.category,
                            q.text,
                            q.relevant,
                            first.map(|r| r + 1),
                            &o.ranked[..o.ranked.len().min(5)],
                            o.filters
                        );
                    }
                }
            }
        }
    }
    cancel.cancel();
    let _ = service.await;
    Ok(())
}
