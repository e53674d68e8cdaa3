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

/// The product area `text` is about, among the team's `areas` (each `Name` or `Name: word,
/// word`): the area whose name or words it uses most, matched as whole words (a trailing `s`
/// forgiven), the first listed on a tie; none when no area's words appear.
pub fn product_area(areas: &[String], text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let uses = |term: &str| {
        let term: Vec<&str> = term.split_whitespace().collect();
        !term.is_empty()
            && words.windows(term.len()).any(|w| {
                w.iter().zip(&term).all(|(a, b)| {
                    a == b || a.strip_suffix('s') == Some(b) || b.strip_suffix('s') == Some(a)
                })
            })
    };
    let mut best: Option<(usize, &str)> = None;
    for area in areas {
        let (name, more) = area.split_once(':').unwrap_or((area, ""));
        let name = name.trim();
        let hits = std::iter::once(name)
            .chain(more.split(','))
            .map(|t| t.trim().to_lowercase())
            .filter(|t| uses(t))
            .count();
        if hits > 0 && best.is_none_or(|(b, _)| hits > b) {
            best = Some((hits, name));
        }
    }
    best.map(|(_, name)| name.to_owned())
}

/// The team's name for an area the model named: the listed area it matches (by name, case
/// aside), else the area its words point to; with no areas listed, the model's own name.
pub fn listed_area(areas: &[String], named: Option<&str>, text: &str) -> Option<String> {
    if areas.is_empty() {
        return named.map(str::to_owned);
    }
    let named_area = named.and_then(|n| {
        areas
            .iter()
            .map(|a| {
                a.split_once(':')
                    .map_or(a.as_str(), |(name, _)| name)
                    .trim()
            })
            .find(|a| a.eq_ignore_ascii_case(n.trim()))
    });
    named_area
        .map(str::to_owned)
        .or_else(|| product_area(areas, text))
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

    #[test]
    fn a_quote_is_filed_under_the_area_whose_words_it_uses() {
        let areas = vec![
            "Billing: invoice, payment, charge".to_owned(),
            "Reporting: export, dashboard, csv".to_owned(),
            "Mobile app".to_owned(),
        ];
        let area = |t: &str| product_area(&areas, t);
        assert_eq!(
            area("We were charged twice on the last invoice").as_deref(),
            Some("Billing")
        );
        assert_eq!(
            area("Please add a CSV export of the dashboards").as_deref(),
            Some("Reporting")
        );
        assert_eq!(
            area("The mobile app crashes on login").as_deref(),
            Some("Mobile app")
        );
        // Part of a word is not the word; nothing listed matches.
        assert_eq!(area("Our reimbursement flow is slow"), None);
        assert_eq!(area("mobile users love it"), None);
        assert_eq!(
            listed_area(&areas, Some("billing"), "anything").as_deref(),
            Some("Billing")
        );
        assert_eq!(
            listed_area(&areas, Some("Integrations"), "export to csv please").as_deref(),
            Some("Reporting")
        );
        assert_eq!(
            listed_area(&[], Some("Search"), "x").as_deref(),
            Some("Search")
        );
    }
}
