//! The in-process model must match the reference model, and the OpenAI-compatible client must
//! speak the documented `/embeddings` shapes.

use assistant_embed::{
    Batcher, Chunker, Embedder, Kernel, LocalModel, OpenAiEmbedder, Priority, cosine,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{bearer_token, body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn model_dir() -> PathBuf {
    std::env::var("EMBEDDING_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/assistant/models/all-MiniLM-L6-v2")
        })
}

fn reference() -> Vec<(String, Vec<f32>)> {
    let data: Value = serde_json::from_str(include_str!("data/reference_vectors.json")).unwrap();
    data["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let v = s["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32);
            (s["text"].as_str().unwrap().to_owned(), v.collect())
        })
        .collect()
}

#[test]
fn local_model_matches_reference_vectors_alone_and_packed_together() {
    let model = LocalModel::load(&model_dir()).expect("run scripts/setup.sh to fetch the model");
    assert_eq!(model.dimensions(), 384);
    let reference = reference();
    let texts: Vec<String> = reference.iter().map(|(t, _)| t.clone()).collect();
    // One at a time and all together in one pass (packed side by side).
    let batched = model.embed(&texts).unwrap();
    for (i, (text, expected)) in reference.iter().enumerate() {
        let alone = &model.embed(std::slice::from_ref(text)).unwrap()[0];
        let c1 = cosine(alone, expected);
        let c2 = cosine(&batched[i], expected);
        assert!(c1 >= 0.9999, "{text:?}: cosine {c1}");
        assert!(c2 >= 0.9999, "{text:?} in a batch: cosine {c2}");
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalized: {norm}");
    }
}

/// The AVX-512 panels (where the CPU has them) and the portable kernels give the same vectors,
/// for texts alone and packed together, short and at the model's full 256 tokens.
#[test]
fn both_kernels_give_the_same_vectors() {
    let fast = LocalModel::load(&model_dir()).unwrap();
    let portable = LocalModel::load_with(&model_dir(), Kernel::Portable).unwrap();
    let mut texts: Vec<String> = reference().into_iter().map(|(t, _)| t).collect();
    texts.push("Quarterly review: rebalance, harvest losses, revisit the trust. ".repeat(40));
    texts.push("ok".into());
    let a = fast.embed(&texts).unwrap();
    let b = portable.embed(&texts).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let c = cosine(x, y);
        assert!(c >= 0.99999, "text {i}: the kernels disagree, cosine {c}");
    }
}

#[test]
fn mixed_lengths_are_grouped_without_changing_results() {
    let model = LocalModel::load(&model_dir()).unwrap();
    let long = "Rebalancing the portfolio toward bonds reduces volatility. ".repeat(30);
    let texts: Vec<String> = (0..40)
        .map(|i| {
            if i % 3 == 0 {
                long.clone()
            } else {
                format!("short note number {i}")
            }
        })
        .collect();
    let together = model.embed(&texts).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let alone = &model.embed(std::slice::from_ref(text)).unwrap()[0];
        let c = cosine(alone, &together[i]);
        assert!(c > 0.999, "text {i} changed when embedded with others: {c}");
    }
}

#[test]
fn local_model_ranks_by_meaning() {
    let model = LocalModel::load(&model_dir()).unwrap();
    let v = model
        .embed(&[
            "How should I rebalance my retirement savings?".into(),
            "Adjusting the allocation of a 401k and IRA portfolio".into(),
            "The recipe needs two cups of flour".into(),
        ])
        .unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
}

#[tokio::test]
async fn batcher_keeps_order_across_concurrent_callers() {
    let model = Arc::new(LocalModel::load(&model_dir()).unwrap());
    let batcher = Batcher::spawn(Embedder::Local(model.clone()), 8, Duration::from_millis(5));
    let reference = reference();
    let texts: Vec<String> = reference.iter().map(|(t, _)| t.clone()).collect();
    let (a, b) = tokio::join!(
        batcher.embed_many(texts.clone(), Priority::Bulk),
        batcher.embed_one(texts[3].clone())
    );
    let a = a.unwrap();
    for (i, (_, expected)) in reference.iter().enumerate() {
        assert!(cosine(&a[i], expected) >= 0.99, "result {i} out of order");
    }
    assert!(cosine(&b.unwrap(), &reference[3].1) >= 0.99);
}

/// Someone waits for an urgent text: it is embedded at once, not after the linger that lets
/// bulk texts gather into a batch (a minute here, so waiting for it would time the test out).
#[tokio::test]
async fn urgent_texts_do_not_linger_for_company() {
    let model = Arc::new(LocalModel::load(&model_dir()).unwrap());
    let batcher = Batcher::spawn(Embedder::Local(model), 8, Duration::from_secs(60));
    let answered = tokio::time::timeout(
        Duration::from_secs(20),
        batcher.embed_one("client asks about a Roth conversion".into()),
    )
    .await;
    assert!(answered.expect("the urgent text lingered").is_ok());
    // A bulk text does wait for company (once the moment the model keeps for more urgent
    // texts after an urgent batch has passed); an urgent one arriving meanwhile ends the wait
    // and both are answered.
    let bulk = {
        let batcher = batcher.clone();
        tokio::spawn(async move {
            batcher
                .embed_with("quarterly review notes".into(), Priority::Bulk)
                .await
        })
    };
    tokio::time::sleep(assistant_embed::URGENT_GRACE * 4).await;
    let (urgent, bulk) = tokio::time::timeout(Duration::from_secs(20), async {
        let urgent = batcher.embed_one("wire transfer request".into()).await;
        (urgent, bulk.await.unwrap())
    })
    .await
    .expect("the lingering bulk batch did not go when an urgent text arrived");
    assert!(urgent.is_ok() && bulk.is_ok());
}

/// A backlog of bulk texts does not hold up an urgent one: it goes into the next batch and
/// is answered while most of the backlog still waits.
#[tokio::test]
async fn urgent_texts_overtake_a_bulk_backlog() {
    let model = Arc::new(LocalModel::load(&model_dir()).unwrap());
    let batcher = Batcher::spawn(Embedder::Local(model), 8, Duration::from_millis(2));
    let long = "quarterly portfolio review with rebalancing notes ".repeat(20);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backlog: Vec<_> = (0..96)
        .map(|i| {
            let (batcher, done, text) = (batcher.clone(), done.clone(), format!("{long} {i}"));
            tokio::spawn(async move {
                batcher.embed_with(text, Priority::Bulk).await.unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    batcher
        .embed_one("client asks about a Roth conversion".into())
        .await
        .unwrap();
    let bulk_done_first = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        bulk_done_first <= 32,
        "the urgent text waited for {bulk_done_first} bulk texts"
    );
    for task in backlog {
        task.await.unwrap();
    }
}

/// An interactive lane's handlers bring their texts one after another, each a few
/// milliseconds after the last was answered (they store its chunks first). A bulk backlog
/// must not slip a batch into each of those gaps: while the urgent texts keep coming, at most
/// the bulk batch already running when they began finishes.
#[tokio::test]
async fn a_steady_urgent_stream_is_not_interleaved_with_bulk_batches() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let model = Arc::new(LocalModel::load(&model_dir()).unwrap());
    let batcher = Batcher::spawn(Embedder::Local(model), 8, Duration::from_millis(2));
    let long = "quarterly portfolio review with rebalancing notes ".repeat(8);
    let done = Arc::new(AtomicUsize::new(0));
    let backlog: Vec<_> = (0..160)
        .map(|i| {
            let (batcher, done, text) = (batcher.clone(), done.clone(), format!("{long} {i}"));
            tokio::spawn(async move {
                batcher.embed_with(text, Priority::Bulk).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = done.load(Ordering::SeqCst);
    for i in 0..6 {
        batcher
            .embed_with(format!("new email {i} from a client"), Priority::Urgent)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await; // the handler stores its chunks
    }
    let during = done.load(Ordering::SeqCst) - before;
    for task in &backlog {
        task.abort();
    }
    assert!(
        during <= 16,
        "{during} bulk texts were embedded between six urgent ones"
    );
}

#[test]
fn chunker_counts_model_tokens() {
    let chunker = Chunker::from_model_dir(&model_dir(), 50, 10).unwrap();
    let text = "Portfolio rebalancing keeps risk in line with goals. ".repeat(40);
    let chunks = chunker.split(&text);
    assert!(chunks.len() > 5, "{} chunks", chunks.len());
    let model = LocalModel::load(&model_dir()).unwrap();
    for c in &chunks {
        let n = model
            .tokenizer()
            .encode(c.as_str(), false)
            .unwrap()
            .get_ids()
            .len();
        assert!(n <= 50, "chunk of {n} tokens");
    }
}

#[tokio::test]
async fn openai_compatible_endpoint() {
    let server = MockServer::start().await;
    let mut a = vec![0.0f32; 4];
    a[0] = 2.0;
    let mut b = vec![0.0f32; 4];
    b[1] = 1.0;
    // Answer out of order: the client must restore input order from `index`.
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(bearer_token("sk-test"))
        .and(body_partial_json(json!({"model": "text-embedding-3-small", "dimensions": 4, "input": ["first", "second"]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": b},
                {"object": "embedding", "index": 0, "embedding": a},
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 2, "total_tokens": 2}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let embedder = OpenAiEmbedder::new(
        &format!("{}/v1", server.uri()),
        "sk-test",
        "text-embedding-3-small",
        4,
    );
    let out = embedder
        .embed(vec!["first".into(), "second".into()])
        .await
        .unwrap();
    assert_eq!(
        out[0],
        vec![1.0, 0.0, 0.0, 0.0],
        "normalized, first input first"
    );
    assert_eq!(out[1], vec![0.0, 1.0, 0.0, 0.0]);

    let wrong = OpenAiEmbedder::new(
        &format!("{}/v1", server.uri()),
        "sk-test",
        "text-embedding-3-small",
        384,
    );
    assert!(
        wrong.embed(vec!["first".into()]).await.is_err(),
        "a 404 from the fake must fail"
    );
}
