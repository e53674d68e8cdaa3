//! The domain's synonyms (`glossary.txt`): a question that says "nursing care insurance" also
//! searches full text for "LTC" and "long-term care", because the words a client or a product
//! manager asks with are often not the words the advisor's note or the ticket was written in,
//! and the local embedding model knows too little of the trade to bridge them alone.

use std::sync::LazyLock;

/// A glossary phrase: as written (what full text searches for) and as its words (what a
/// question is matched against).
struct Phrase {
    text: &'static str,
    words: Vec<String>,
}

static GROUPS: LazyLock<Vec<Vec<Phrase>>> = LazyLock::new(|| parse(include_str!("glossary.txt")));

/// The words of `text` as the glossary compares them: lower case, split at anything but
/// letters, digits and apostrophes ("401(k)" is "401 k", "long-term" is "long term").
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse(text: &'static str) -> Vec<Vec<Phrase>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            line.split('|')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|text| Phrase {
                    text,
                    words: words(text),
                })
                .collect()
        })
        .collect()
}

/// What the question's phrases also go by, as glossary phrases, each once and none that the
/// question already says.
pub fn related(question: &str) -> Vec<String> {
    let said = words(question);
    let says =
        |phrase: &[String]| !phrase.is_empty() && said.windows(phrase.len()).any(|w| w == phrase);
    let mut out: Vec<&Phrase> = Vec::new();
    for group in GROUPS.iter() {
        if !group.iter().any(|p| says(&p.words)) {
            continue;
        }
        for p in group {
            if !says(&p.words) && !out.iter().any(|o| o.words == p.words) {
                out.push(p);
            }
        }
    }
    out.into_iter().map(|p| p.text.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phrase_brings_its_group() {
        let r = related("what does the nursing care insurance pay per day");
        for expected in ["ltc", "long-term care"] {
            assert!(r.iter().any(|x| x == expected), "{expected} not in {r:?}");
        }
        assert!(
            !r.iter().any(|x| x == "nursing care"),
            "already said: {r:?}"
        );
        // "long-term care" and "long term care" are the same words: searched once.
        assert_eq!(
            r.iter()
                .filter(|x| words(x) == ["long", "term", "care"])
                .count(),
            1,
            "{r:?}"
        );
    }

    #[test]
    fn words_match_whole_and_in_order() {
        assert!(related("care nursing").iter().all(|x| x != "ltc"));
        // "arm" must not match inside "harm" or "farm", and "401(k)" reads as "401 k".
        assert!(related("farm harm").is_empty());
        assert!(related("her 401(k) balance").iter().any(|x| x == "401k"));
        assert!(related("whose kid plays baseball").is_empty());
    }

    #[test]
    fn every_group_has_two_distinct_phrases() {
        for group in GROUPS.iter() {
            assert!(group.len() >= 2, "{:?}", group.first().map(|p| p.text));
            for p in group {
                assert!(!p.words.is_empty(), "empty phrase {:?}", p.text);
            }
        }
    }
}
