//! Reading a search question: which words should match, which time it names ("last week",
//! "in October", "the week of December 7"), which kind of document it wants ("emails",
//! "meetings"), which people it names, and whether it asks for the latest. Times become
//! filters; kinds, people and "latest" become boosts, so a question that names them loosely
//! still finds what it meant.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};

/// What the question says, read without the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The words that should match, lower-cased, without question and filler words.
    pub terms: Vec<String>,
    /// The question without the time phrase: what is embedded.
    pub semantic: String,
    /// The time the question names, as `[from, to)` and as the words that named it.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub when: Option<String>,
    pub kinds: Vec<&'static str>,
    /// Runs of capitalized words that may be people ("Greg Hill", "Maria").
    pub names: Vec<Vec<String>>,
    pub latest: bool,
    /// What the question's phrases also go by in the trade (see [`crate::glossary`]):
    /// searched in full text beside `terms`.
    pub related: Vec<String>,
}

impl Parsed {
    /// What is embedded for the vector side: the question without its time phrase, followed
    /// by what the trade also calls its phrases ("... nursing care insurance ... (ltc,
    /// long-term care)"), which moves the small local model towards notes written in jargon.
    pub fn embedded(&self) -> String {
        if self.related.is_empty() {
            self.semantic.clone()
        } else {
            format!("{} ({})", self.semantic, self.related.join(", "))
        }
    }
}

/// Question, filler and function words: they say how something is asked, not what about.
/// (Postgres drops its own English stop words from the query as well.)
const FILLER: &[&str] = &[
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "when",
    "where",
    "why",
    "how",
    "did",
    "does",
    "do",
    "is",
    "are",
    "was",
    "were",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "for",
    "about",
    "with",
    "from",
    "and",
    "or",
    "me",
    "my",
    "i",
    "we",
    "our",
    "us",
    "you",
    "your",
    "he",
    "she",
    "his",
    "her",
    "their",
    "they",
    "it",
    "its",
    "that",
    "this",
    "these",
    "those",
    "there",
    "any",
    "anything",
    "something",
    "someone",
    "anyone",
    "tell",
    "show",
    "find",
    "know",
    "give me",
    "can",
    "could",
    "should",
    "would",
    "will",
    "has",
    "have",
    "had",
    "be",
    "been",
    "by",
    "at",
    "as",
    "up",
    "out",
    "into",
    "than",
    "then",
    "so",
    "just",
    "also",
    "all",
    "some",
    "much",
    "many",
    "client",
    "clients",
    "customer",
    "customers",
    "person",
    "people",
    "thing",
    "things",
    "say",
    "said",
    "send",
    "sent",
    "get",
    "got",
    "ask",
    "asked",
    "asking",
    "want",
    "wants",
    "wanted",
    "mention",
    "mentioned",
    "question",
    "message",
    "latest",
    "recent",
    "recently",
    "newest",
    "last",
    "most",
    "received",
    "came",
    "come",
    "happened",
    "happen",
    "decide",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

/// Words that name a kind of document.
const KINDS: &[(&str, &str)] = &[
    ("email", "email"),
    ("emails", "email"),
    ("mail", "email"),
    ("inbox", "email"),
    ("meeting", "meeting"),
    ("meetings", "meeting"),
    ("calendar", "meeting"),
    ("appointment", "meeting"),
    ("appointments", "meeting"),
    ("note", "note"),
    ("notes", "note"),
    ("slack", "message"),
    ("posted", "message"),
    ("post", "message"),
    ("channel", "message"),
    ("transcript", "transcript"),
    ("interview", "transcript"),
    ("call", "transcript"),
    ("contact", "contact"),
    ("deal", "deal"),
    ("deals", "deal"),
];

fn month_of(word: &str) -> Option<u32> {
    const SHORT: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let w = word.trim_end_matches('.');
    MONTHS
        .iter()
        .position(|m| *m == w)
        .or_else(|| SHORT.iter().position(|m| *m == w))
        .or_else(|| (w == "sept").then_some(8))
        .map(|i| i as u32 + 1)
}

fn weekday_of(word: &str) -> Option<Weekday> {
    WEEKDAYS
        .iter()
        .find(|(name, _)| *name == word || word.strip_suffix('s') == Some(name))
        .map(|(_, d)| *d)
}

/// When day `d` starts in `zone`: its midnight, or the first hour after it where a clock
/// change skips midnight (as in Santiago or Beirut).
fn day_start<Tz: TimeZone>(zone: &Tz, d: NaiveDate) -> DateTime<Utc> {
    (0..3)
        .find_map(|h| {
            let local = d.and_hms_opt(h, 0, 0)?;
            zone.from_local_datetime(&local).earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")))
}

fn month_range(year: i32, month: u32) -> (NaiveDate, NaiveDate) {
    let start = NaiveDate::from_ymd_opt(year, month, 1).expect("valid month");
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .expect("valid month");
    (start, next)
}

/// The year that puts `month`/`day` nearest to `today` (within six months either way).
fn nearest_year(today: NaiveDate, month: u32, day: u32) -> Option<NaiveDate> {
    [today.year() - 1, today.year(), today.year() + 1]
        .into_iter()
        .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day))
        .min_by_key(|d| (*d - today).num_days().abs())
}

/// A word as it appears, cleaned of surrounding punctuation.
fn clean(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_alphanumeric() && c != '$')
}

/// Reads the question. `now` is when it is asked, in the user's time zone, which decides
/// when "yesterday" or "in October" start and end.
pub fn parse<Tz: TimeZone>(question: &str, now: DateTime<Tz>) -> Parsed {
    let zone = now.timezone();
    let raw: Vec<&str> = question.split_whitespace().collect();
    let lower: Vec<String> = raw.iter().map(|w| clean(w).to_lowercase()).collect();
    let today = now.date_naive();
    let monday = today - Duration::days(today.weekday().num_days_from_monday() as i64);
    let mut used = vec![false; raw.len()];
    let mut range: Option<(NaiveDate, NaiveDate)> = None;
    let mut when_words: Vec<usize> = Vec::new();
    let word = |i: usize| lower.get(i).map(String::as_str).unwrap_or("");

    let mut i = 0;
    while i < lower.len() && range.is_none() {
        let w = word(i);
        let (found, span): (Option<(NaiveDate, NaiveDate)>, usize) = match w {
            "today" => (Some((today, today + Duration::days(1))), 1),
            "yesterday" => (Some((today - Duration::days(1), today)), 1),
            "this" | "coming" | "next" | "last" | "past" | "earlier" | "later" => {
                let mut j = i + 1;
                if word(j) == "coming" || word(j) == "this" {
                    j += 1;
                }
                let next_word = word(j);
                let coming = w == "next" || w == "coming" || word(i + 1) == "coming";
                match next_word {
                    "week" if coming => (
                        Some((monday + Duration::days(7), monday + Duration::days(14))),
                        j + 1 - i,
                    ),
                    "week" if w == "last" => {
                        (Some((monday - Duration::days(7), monday)), j + 1 - i)
                    }
                    "week" if w == "past" => (
                        Some((today - Duration::days(7), today + Duration::days(1))),
                        j + 1 - i,
                    ),
                    "week" => (Some((monday, monday + Duration::days(7))), j + 1 - i),
                    "month" => {
                        let (start, end) = month_range(today.year(), today.month());
                        let prev = month_range(
                            if today.month() == 1 {
                                today.year() - 1
                            } else {
                                today.year()
                            },
                            if today.month() == 1 {
                                12
                            } else {
                                today.month() - 1
                            },
                        );
                        let r = match w {
                            "last" | "past" => prev,
                            _ if coming => month_range(end.year(), end.month()),
                            _ => (start, end),
                        };
                        (Some(r), j + 1 - i)
                    }
                    "year" => {
                        let y = match w {
                            "last" | "past" => today.year() - 1,
                            _ if coming => today.year() + 1,
                            _ => today.year(),
                        };
                        (
                            NaiveDate::from_ymd_opt(y, 1, 1).zip(NaiveDate::from_ymd_opt(
                                y + 1,
                                1,
                                1,
                            )),
                            j + 1 - i,
                        )
                    }
                    d if w == "last" && weekday_of(d).is_some() => {
                        // "last Monday and Tuesday": the most recent such days before today.
                        let mut days = Vec::new();
                        let mut k = j;
                        while let Some(day) = weekday_of(word(k)) {
                            let back = (today.weekday().num_days_from_monday() as i64
                                - day.num_days_from_monday() as i64)
                                .rem_euclid(7);
                            days.push(today - Duration::days(if back == 0 { 7 } else { back }));
                            k += 1;
                            if word(k) == "and" && weekday_of(word(k + 1)).is_some() {
                                k += 1;
                            }
                        }
                        let lo = days.iter().min().copied().unwrap_or(today);
                        let hi = days.iter().max().copied().unwrap_or(today);
                        (Some((lo, hi + Duration::days(1))), k - i)
                    }
                    _ => (None, 1),
                }
            }
            "week" if word(i.wrapping_sub(1)) == "the" && word(i + 1) == "of" => {
                match (month_of(word(i + 2)), word(i + 3).parse::<u32>().ok()) {
                    (Some(m), Some(d)) => match nearest_year(today, m, d) {
                        Some(day) => {
                            let start =
                                day - Duration::days(day.weekday().num_days_from_monday() as i64);
                            (Some((start, start + Duration::days(7))), 4)
                        }
                        None => (None, 1),
                    },
                    _ => (None, 1),
                }
            }
            _ => {
                let early_late = matches!(w, "early" | "late" | "mid");
                let m_at = if early_late { i + 1 } else { i };
                match month_of(word(m_at)) {
                    // A bare "may" is a verb more often than a month.
                    Some(5)
                        if word(m_at) == "may"
                            && !matches!(
                                word(m_at.wrapping_sub(1)),
                                "in" | "early" | "late" | "mid"
                            ) =>
                    {
                        (None, 1)
                    }
                    Some(m) => {
                        if let Some(d) = word(m_at + 1)
                            .trim_end_matches(|c: char| c.is_alphabetic())
                            .parse::<u32>()
                            .ok()
                            .filter(|d| (1..=31).contains(d))
                        {
                            match nearest_year(today, m, d) {
                                Some(day) => (Some((day, day + Duration::days(1))), m_at + 2 - i),
                                None => (None, 1),
                            }
                        } else {
                            // The most recent such month (this month counts).
                            let year = if m <= today.month() {
                                today.year()
                            } else {
                                today.year() - 1
                            };
                            let year = word(m_at + 1)
                                .parse::<i32>()
                                .ok()
                                .filter(|y| (1900..2200).contains(y))
                                .unwrap_or(year);
                            let (start, end) = month_range(year, m);
                            let r = match w {
                                "early" => (start, start + Duration::days(10)),
                                "mid" => (start + Duration::days(10), start + Duration::days(20)),
                                "late" => (start + Duration::days(20), end),
                                _ => (start, end),
                            };
                            let span =
                                m_at + 1 - i + usize::from(word(m_at + 1).parse::<i32>().is_ok());
                            (Some(r), span)
                        }
                    }
                    None => (None, 1),
                }
            }
        };
        if let Some(r) = found {
            range = Some(r);
            // "in October", "on November 6", "from last week": the preposition goes too.
            let first = if i > 0
                && matches!(
                    word(i - 1),
                    "in" | "on" | "from" | "during" | "since" | "of"
                ) {
                i - 1
            } else {
                i
            };
            let first = if word(first.wrapping_sub(1)) == "the" && word(first) == "week" {
                first - 1
            } else {
                first
            };
            let end = (i + span).min(raw.len());
            used[first..end].iter_mut().for_each(|u| *u = true);
            when_words.extend(first..end);
            break;
        }
        i += 1;
    }

    let latest = lower.iter().enumerate().any(|(k, w)| {
        matches!(w.as_str(), "latest" | "newest" | "recent" | "recently")
            || (w == "last"
                && !used[k]
                && matches!(
                    word(k + 1),
                    "email" | "message" | "note" | "update" | "time" | "meeting" | "call"
                ))
    });
    let mut kinds: Vec<&'static str> = Vec::new();
    for w in &lower {
        if let Some((_, k)) = KINDS.iter().find(|(word, _)| word == w)
            && !kinds.contains(k)
        {
            kinds.push(k);
        }
    }

    // Names: runs of capitalized words (not at the very start unless followed by another
    // capitalized word), never all-caps tickers, months or question words.
    let mut names: Vec<Vec<String>> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for (k, w) in raw.iter().enumerate() {
        let c = clean(w).trim_end_matches("'s").trim_end_matches('\u{2019}');
        let capitalized = c.chars().next().is_some_and(char::is_uppercase)
            && c.chars().skip(1).any(char::is_lowercase)
            && c.chars()
                .all(|ch| ch.is_alphabetic() || ch == '-' || ch == '\'')
            && !used[k]
            && month_of(&c.to_lowercase()).is_none()
            && weekday_of(&c.to_lowercase()).is_none()
            && !FILLER.contains(&c.to_lowercase().as_str())
            && !KINDS.iter().any(|(k, _)| *k == c.to_lowercase());
        // "Form 709", "Connect 3.4": a word before a number names a thing, not a person.
        let numbered = raw
            .get(k + 1)
            .is_some_and(|n| n.chars().next().is_some_and(|ch| ch.is_ascii_digit()));
        if numbered {
            run.clear();
        }
        let capitalized = capitalized && !numbered;
        if capitalized {
            run.push(c.to_lowercase());
        }
        let ends = !capitalized || w.ends_with([',', '.', '?', '!', ';', ':']) || w.ends_with("'s");
        if ends && !run.is_empty() {
            names.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        names.push(run);
    }
    // Too short to name anyone ("St." of "St. Anne's").
    names.retain(|n| n.iter().map(String::len).sum::<usize>() >= 3);

    let terms: Vec<String> = lower
        .iter()
        .enumerate()
        // Words that name a kind are boosts, not words to match ("emails" is in every
        // contact's "Email:" line).
        .filter(|(k, w)| {
            !used[*k]
                && !w.is_empty()
                && !FILLER.contains(&w.as_str())
                && !KINDS.iter().any(|(kind, _)| kind == w)
        })
        .map(|(_, w)| w.trim_end_matches("'s").to_owned())
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect();
    let semantic = raw
        .iter()
        .enumerate()
        .filter(|(k, _)| !used[*k])
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(" ");
    let related = crate::glossary::related(&semantic);
    Parsed {
        terms,
        related,
        semantic: if semantic.trim().is_empty() {
            question.to_owned()
        } else {
            semantic
        },
        from: range.map(|r| day_start(&zone, r.0)),
        to: range.map(|r| day_start(&zone, r.1)),
        when: (!when_words.is_empty()).then(|| {
            when_words
                .iter()
                .map(|&k| raw[k])
                .collect::<Vec<_>>()
                .join(" ")
        }),
        kinds,
        names,
        latest,
    }
}

/// The terms as a `to_tsquery` expression matching any of them; `None` when no term is left.
/// Each term is quoted, so Postgres' own parser splits ids ("8821-0457") into a phrase.
pub fn tsquery(terms: &[String]) -> Option<String> {
    joined(terms, " | ")
}

/// The terms as a `to_tsquery` expression matching all of them.
pub fn tsquery_all(terms: &[String]) -> Option<String> {
    joined(terms, " & ")
}

fn joined(terms: &[String], op: &str) -> Option<String> {
    let quoted: Vec<String> = terms
        .iter()
        .map(|t| format!("'{}'", t.replace('\'', "''").replace('\\', "")))
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        // A Sunday.
        "2026-11-29T12:00:00Z".parse().unwrap()
    }

    fn day(s: &str) -> DateTime<Utc> {
        format!("{s}T00:00:00Z").parse().unwrap()
    }

    #[test]
    fn times_are_read_in_the_users_time_zone() {
        let zone: chrono_tz::Tz = "America/New_York".parse().unwrap();
        // Thursday 19 November, 22:00 in New York: already Friday in UTC.
        let asked: DateTime<Utc> = "2026-11-20T03:00:00Z".parse().unwrap();
        let p = parse("what did Maria send yesterday", asked.with_timezone(&zone));
        assert_eq!(p.from, Some("2026-11-18T05:00:00Z".parse().unwrap()));
        assert_eq!(p.to, Some("2026-11-19T05:00:00Z".parse().unwrap()));
        let p = parse("what did Maria send yesterday", asked);
        assert_eq!(p.from, Some(day("2026-11-19")), "in UTC it was Friday");
        // March starts in standard time and ends in daylight time.
        let p = parse("the rebalance in March", asked.with_timezone(&zone));
        assert_eq!(p.from, Some("2026-03-01T05:00:00Z".parse().unwrap()));
        assert_eq!(p.to, Some("2026-04-01T04:00:00Z".parse().unwrap()));
        // Where a clock change skips midnight, the day starts at the first hour it has.
        let santiago: chrono_tz::Tz = "America/Santiago".parse().unwrap();
        let start = day_start(&santiago, NaiveDate::from_ymd_opt(2026, 9, 6).unwrap());
        assert_eq!(
            start,
            "2026-09-06T04:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn the_trade_s_other_words_are_searched_and_embedded() {
        let p = parse(
            "what does the nursing care insurance pay per day last week",
            now(),
        );
        assert!(p.related.iter().any(|r| r == "ltc"), "{:?}", p.related);
        assert!(
            !p.terms.iter().any(|t| t == "ltc"),
            "terms are what was said"
        );
        let embedded = p.embedded();
        assert!(
            embedded.starts_with("what does the nursing care insurance pay per day ("),
            "the time phrase is not embedded, the related words are: {embedded}"
        );
        assert!(embedded.contains("ltc"), "{embedded}");
        let plain = parse("whose kid plays baseball", now());
        assert!(plain.related.is_empty());
        assert_eq!(plain.embedded(), "whose kid plays baseball");
    }

    #[test]
    fn question_words_do_not_decide() {
        let p = parse("whose kid plays baseball", now());
        assert_eq!(p.terms, vec!["kid", "plays", "baseball"]);
        assert_eq!(p.from, None);
        assert!(p.names.is_empty());
    }

    #[test]
    fn relative_times_become_ranges() {
        let cases = [
            ("what came in yesterday", "2026-11-28", "2026-11-29"),
            ("portal feedback from last week", "2026-11-16", "2026-11-23"),
            ("portal feedback from this week", "2026-11-23", "2026-11-30"),
            ("meetings this coming week", "2026-11-30", "2026-12-07"),
            ("what did Maria send in October", "2026-10-01", "2026-11-01"),
            (
                "what did David ask in late August",
                "2026-08-21",
                "2026-09-01",
            ),
            (
                "Medicare question earlier this month",
                "2026-11-01",
                "2026-12-01",
            ),
            (
                "emails I received last Monday and Tuesday",
                "2026-11-23",
                "2026-11-25",
            ),
            (
                "what did we decide at the November 6 meeting",
                "2026-11-06",
                "2026-11-07",
            ),
            (
                "meetings the week of December 7",
                "2026-12-07",
                "2026-12-14",
            ),
            ("what happened in December", "2025-12-01", "2026-01-01"),
        ];
        for (q, from, to) in cases {
            let p = parse(q, now());
            assert_eq!((p.from, p.to), (Some(day(from)), Some(day(to))), "{q}");
        }
        let p = parse("what did Maria send in October", now());
        assert_eq!(p.when.as_deref(), Some("in October"));
        assert_eq!(p.semantic, "what did Maria send");
    }

    #[test]
    fn may_is_a_month_only_when_it_reads_like_one() {
        assert_eq!(parse("who may need a trust", now()).from, None);
        assert_eq!(
            parse("first meeting notes with Lucy in May", now()).from,
            Some(day("2026-05-01"))
        );
    }

    #[test]
    fn names_kinds_and_latest() {
        let p = parse("what did Helen Park decide about social security", now());
        assert_eq!(p.names, vec![vec!["helen".to_owned(), "park".to_owned()]]);
        let p = parse("Greg Hill retirement plan for the store", now());
        assert_eq!(p.names, vec![vec!["greg".to_owned(), "hill".to_owned()]]);
        let p = parse("Jenny Chen's practice", now());
        assert_eq!(p.names, vec![vec!["jenny".to_owned(), "chen".to_owned()]]);
        assert_eq!(p.terms, vec!["jenny", "chen", "practice"]);
        let p = parse("the most recent email from a client about NVDA", now());
        assert!(p.latest);
        assert_eq!(p.kinds, vec!["email"]);
        assert!(p.names.is_empty(), "a ticker is not a name: {:?}", p.names);
    }

    #[test]
    fn ids_are_quoted_for_postgres() {
        let p = parse("account 8821-0457", now());
        assert_eq!(tsquery(&p.terms).unwrap(), "'account' | '8821-0457'");
        assert_eq!(tsquery(&["o'brien".into()]).unwrap(), "'o''brien'");
        assert_eq!(tsquery(&[]), None);
    }
}
