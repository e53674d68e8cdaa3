//! The local classifier and extractor with the real local model: messages of the kinds a
//! product team reads, held out from the classifier's examples (none of these sentences is
//! one of them).

use assistant_insights as insights;
use embed::LocalModel;
use insights::{Kind, LocalClassifier, Scored, text};
use std::path::PathBuf;

fn model() -> LocalModel {
    let dir = std::env::var("EMBEDDING_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/assistant/models/all-MiniLM-L6-v2")
        });
    LocalModel::load(&dir).unwrap()
}

fn classifier(model: &LocalModel) -> LocalClassifier {
    let examples = insights::classify::examples();
    let vectors = model
        .embed(
            &examples
                .iter()
                .map(|(_, t)| (*t).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    LocalClassifier::new(examples.into_iter().map(|(k, _)| k).zip(vectors).collect())
}

#[test]
fn requests_and_bugs_become_quoted_items_and_small_talk_does_not() {
    let model = model();
    let classifier = classifier(&model);
    let body = "Hey folks, hope the launch went well!\nOne thing from our side: could you add a bulk export of invoices to Excel?\nAlso the calendar sync has been failing since Tuesday and meetings are missing.\nSee you at the conference next week.";
    let sentences = text::sentences(body, body.len(), false);
    let vectors = model
        .embed(
            &sentences
                .iter()
                .map(|s| s.span.of(body).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let scored: Vec<Scored> = sentences
        .into_iter()
        .zip(vectors)
        .map(|(sentence, vector)| Scored {
            verdict: classifier.classify(&vector),
            sentence,
            vector,
        })
        .collect();
    for s in &scored {
        eprintln!("{:?} {:?}", s.sentence.span.of(body), s.verdict);
    }
    let outcome = insights::extract_local(body, &scored, 6);
    let got: Vec<(Kind, &str)> = outcome
        .items
        .iter()
        .map(|i| (i.kind, i.quote.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Kind::FeatureRequest,
                "One thing from our side: could you add a bulk export of invoices to Excel?"
            ),
            (
                Kind::Bug,
                "Also the calendar sync has been failing since Tuesday and meetings are missing."
            ),
        ]
    );
    for item in &outcome.items {
        assert_eq!(&body[item.span.start..item.span.end], item.quote);
    }
}
