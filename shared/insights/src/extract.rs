//! The local tier 2: a sentence that carries a request, bug or pain point becomes an item,
//! quoted as written and titled from its key phrase.

use crate::classify::Kind;
use regex::Regex;
use std::sync::LazyLock;

/// Words kept in a title.
const TITLE_WORDS: usize = 9;

/// Openings that frame a request without naming it ("It would be great if", "Can you").
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^(?:
            (?:hi|hey|hello)\b[^,.!?]{0,30}[,.!]\s*
          | (?:also|and|but|so|plus|however|oh|ok|okay|one\s+more\s+thing)\b[,:]?\s+
          | (?:it\s+would\s+be\s+(?:really\s+|very\s+|so\s+)?(?:great|nice|awesome|helpful|useful|amazing|good)\s+(?:if\s+(?:we|you|i)\s+(?:could|can)\s+|if\s+|to\s+(?:have|be\s+able\s+to)\s+))
          | (?:(?:i|we)(?:'d|\s+would)\s+(?:really\s+)?(?:love|like)\s+(?:it\s+if\s+|to\s+(?:see|have|get)\s+|to\s+be\s+able\s+to\s+|you\s+to\s+)?)
          | (?:(?:can|could|would)\s+(?:you|we|y'all)\s+(?:please\s+)?)
          | (?:is\s+there\s+(?:a\s+way|any\s+way)\s+to\s+)
          | (?:any\s+(?:plans|chance)\s+(?:to|of|for)\s+)
          | (?:(?:i|we)\s+(?:really\s+)?(?:wish|need|want)\s+(?:there\s+(?:was|were)\s+|you\s+(?:had|would)\s+|it\s+(?:had|would)\s+|a\s+way\s+to\s+|to\s+)?)
          | (?:please\s+)
        )",
    )
    .expect("regex")
});
static URGENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:urgent(?:ly)?|asap|blocker|blocking|critical|immediately|can(?:no|')t|unable|lost|losing|churn|cancel(?:ling|ing)?|deal[- ]?breaker|before\s+(?:we|they)\s+(?:renew|sign))\b").expect("regex")
});

/// A short title from the sentence's key phrase: framing words removed, at most
/// `TITLE_WORDS` words, first letter upper case, no trailing punctuation.
pub fn title(sentence: &str) -> String {
    let mut s = sentence.trim();
    // Openings can stack ("Hi team, it would be great if ...").
    for _ in 0..3 {
        match FRAME.find(s) {
            Some(m) if m.end() < s.len() => s = s[m.end()..].trim_start(),
            _ => break,
        }
    }
    let words: Vec<&str> = s.split_whitespace().take(TITLE_WORDS).collect();
    let mut t = words.join(" ");
    while t.ends_with(|c: char| c.is_ascii_punctuation() && c != ')') {
        t.pop();
    }
    let mut chars = t.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => sentence.trim().to_owned(),
    }
}

pub fn sentiment(kind: Kind) -> &'static str {
    match kind {
        Kind::Praise => "positive",
        Kind::Bug | Kind::PainPoint => "negative",
        Kind::FeatureRequest | Kind::Question => "neutral",
    }
}

/// `high` when the words say it blocks, loses or risks something; a bug is at least
/// `medium`.
pub fn urgency(kind: Kind, sentence: &str) -> &'static str {
    if URGENT.is_match(sentence) {
        "high"
    } else if kind == Kind::Bug {
        "medium"
    } else {
        "low"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_drop_the_framing_and_keep_the_request() {
        for (sentence, expected) in [
            (
                "It would be great if we could export the report to CSV.",
                "Export the report to CSV",
            ),
            ("Can you please add SSO with Okta?", "Add SSO with Okta"),
            (
                "Hi team, we'd love to see a calendar view of all tasks!",
                "A calendar view of all tasks",
            ),
            (
                "The export to CSV times out on large accounts and we lose the whole afternoon.",
                "The export to CSV times out on large accounts",
            ),
            ("Please.", "Please"),
        ] {
            assert_eq!(title(sentence), expected, "{sentence}");
        }
    }

    #[test]
    fn urgency_and_sentiment_follow_the_words_and_kind() {
        assert_eq!(
            urgency(Kind::FeatureRequest, "We can't renew without SSO"),
            "high"
        );
        assert_eq!(urgency(Kind::Bug, "The chart is blue"), "medium");
        assert_eq!(urgency(Kind::FeatureRequest, "Add dark mode"), "low");
        assert_eq!(sentiment(Kind::Bug), "negative");
    }
}
