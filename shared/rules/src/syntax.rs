//! The rule's syntax tree and its printer. `Display` prints the canonical text of a rule, which
//! parses back to the same tree (tested with generated rules).

use serde::{Deserialize, Serialize};
use std::fmt;

/// `when <pattern> [, <pattern> ...] [if <condition>] then <steps>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredRule")]
pub struct Rule {
    /// The event types it concerns (at least one).
    pub patterns: Vec<Pattern>,
    pub condition: Option<Expr>,
    pub steps: Vec<Step>,
}

impl Rule {
    /// Whether an event of this type concerns the rule.
    pub fn concerns(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }

    /// The keys the rule is indexed under, one per pattern.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.patterns.iter().map(Pattern::key).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// `when <patterns> [if <condition>]`: what picks its events.
    pub fn trigger(&self) -> String {
        let patterns: Vec<String> = self.patterns.iter().map(ToString::to_string).collect();
        match &self.condition {
            Some(c) => format!("when {} if {c}", patterns.join(", ")),
            None => format!("when {}", patterns.join(", ")),
        }
    }
}

/// Dotted segments; `None` is `*` (one segment, or the rest when it is the last).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pattern(pub Vec<Option<String>>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Act(Action),
    Wait(Wait),
}

/// An action and its parameters, in the order written. Values are templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    pub params: Vec<(String, String)>,
}

impl Action {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `wait for <target> [if <condition>] within <duration> [else <action>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    pub target: WaitTarget,
    pub condition: Option<Expr>,
    pub within_secs: u64,
    pub otherwise: Option<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "pattern", rename_all = "snake_case")]
pub enum WaitTarget {
    /// A reply to the email the task sent last (its thread, answering its Message-ID).
    Reply,
    Event(Pattern),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "expr", content = "of", rename_all = "snake_case")]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, Op, Operand),
    /// An operand standing alone: true when it is true, a non-empty text, a non-zero number
    /// or a non-empty list.
    Is(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Contains,
    Matches,
    In,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Contains => "contains",
            Op::Matches => "matches",
            Op::In => "in",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operand", content = "value", rename_all = "snake_case")]
pub enum Operand {
    /// An event field: `from_domain`, `event.subject`, `labels`.
    Field(Vec<String>),
    Text(String),
    Number(f64),
    Bool(bool),
    List(Vec<Operand>),
    /// A lookup: `contact_exists(from)`.
    Call(String, Vec<Operand>),
    /// The right side of `matches`, compiled when the rule is parsed or read back.
    Regex(Regex),
}

/// A regular expression compiled once, when its rule is parsed or loaded: evaluation never
/// compiles, and nothing is shared between rules (or users) but the immutable program.
/// Stored as its text.
#[derive(Debug, Clone)]
pub struct Regex(regex::Regex);

impl Regex {
    /// Compiles `pattern`; the error is the library's last line ("unclosed group").
    pub fn new(pattern: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(pattern)
            // A pattern is user input: bound what compiling it may build.
            .size_limit(1 << 20)
            .build()
            .map(Regex)
            .map_err(|e| {
                let problem = e.to_string();
                problem
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .to_owned()
            })
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Regex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Regex::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A rule as stored: rules stored before patterns were compiled at load keep `matches` with a
/// text on its right; reading one compiles it then.
#[derive(Deserialize)]
struct StoredRule {
    patterns: Vec<Pattern>,
    condition: Option<Expr>,
    steps: Vec<Step>,
}

impl From<StoredRule> for Rule {
    fn from(r: StoredRule) -> Self {
        let mut rule = Rule {
            patterns: r.patterns,
            condition: r.condition,
            steps: r.steps,
        };
        if let Some(c) = &mut rule.condition {
            c.compile_patterns();
        }
        for step in &mut rule.steps {
            if let Step::Wait(Wait {
                condition: Some(c), ..
            }) = step
            {
                c.compile_patterns();
            }
        }
        rule
    }
}

impl Pattern {
    /// The pattern for every event.
    pub fn any() -> Self {
        Pattern(vec![None])
    }

    /// Whether an event type (`gmail.email.received`) matches.
    pub fn matches(&self, event_type: &str) -> bool {
        let parts: Vec<&str> = event_type.split('.').collect();
        let n = self.0.len();
        if parts.len() < n || (parts.len() > n && self.0[n - 1].is_some()) {
            return false;
        }
        self.0
            .iter()
            .zip(&parts)
            .all(|(p, part)| p.as_deref().is_none_or(|p| p == *part))
    }

    /// The keys this pattern is indexed under: its own text.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Every index key a pattern matching `event_type` can have: each segment literal or `*`,
    /// and each shorter prefix followed by a final `*`. At most 2^n + n keys for n segments.
    pub fn keys_for(event_type: &str) -> Vec<String> {
        let parts: Vec<&str> = event_type.split('.').collect();
        let n = parts.len().min(6);
        let mut keys = Vec::new();
        for mask in 0..(1u32 << n) {
            let key: Vec<&str> = (0..n)
                .map(|i| if mask & (1 << i) != 0 { "*" } else { parts[i] })
                .collect();
            keys.push(key.join("."));
        }
        keys.push("*".to_owned());
        for len in 1..n {
            for mask in 0..(1u32 << len) {
                let mut key: Vec<&str> = (0..len)
                    .map(|i| if mask & (1 << i) != 0 { "*" } else { parts[i] })
                    .collect();
                key.push("*");
                let key = key.join(".");
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.0.iter().map(|s| s.as_deref().unwrap_or("*")).collect();
        f.write_str(&parts.join("."))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} then {}", self.trigger(), Steps(&self.steps))
    }
}

/// Steps printed with `; ` between them.
pub struct Steps<'a>(pub &'a [Step]);

impl fmt::Display for Steps<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{step}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Act(a) => write!(f, "{a}"),
            Step::Wait(w) => {
                f.write_str("wait for ")?;
                match &w.target {
                    WaitTarget::Reply => f.write_str("reply")?,
                    WaitTarget::Event(p) => write!(f, "{p}")?,
                }
                if let Some(c) = &w.condition {
                    write!(f, " if {c}")?;
                }
                write!(f, " within {}", duration(w.within_secs))?;
                if let Some(a) = &w.otherwise {
                    write!(f, " else {a}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (k, v) in &self.params {
            write!(f, " {k}={}", value(v))?;
        }
        Ok(())
    }
}

/// A parameter value: bare when it is one plain word, quoted otherwise.
fn value(v: &str) -> String {
    let bare = !v.is_empty()
        && !v.starts_with('"')
        && v.chars()
            .all(|c| !c.is_whitespace() && c != ';' && c != '"' && c != '\\');
    if bare { v.to_owned() } else { quoted(v) }
}

pub fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Seconds in the largest unit that divides them: `3d`, `90m`, `45s`.
pub fn duration(secs: u64) -> String {
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

impl Expr {
    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(..) => 1,
            Expr::And(..) => 2,
            Expr::Not(_) => 3,
            Expr::Compare(..) | Expr::Is(_) => 4,
        }
    }

    fn write_at(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        let wrap = self.precedence() < min;
        if wrap {
            f.write_str("(")?;
        }
        match self {
            // Left-associative: the right side of `a or b` needs parentheses if it is an `or`.
            Expr::Or(a, b) => {
                a.write_at(f, 1)?;
                f.write_str(" or ")?;
                b.write_at(f, 2)?;
            }
            Expr::And(a, b) => {
                a.write_at(f, 2)?;
                f.write_str(" and ")?;
                b.write_at(f, 3)?;
            }
            Expr::Not(e) => {
                f.write_str("not ")?;
                e.write_at(f, 3)?;
            }
            Expr::Compare(a, op, b) => write!(f, "{a} {} {b}", op.as_str())?,
            Expr::Is(a) => write!(f, "{a}")?,
        }
        if wrap {
            f.write_str(")")?;
        }
        Ok(())
    }

    /// `matches` with a text on its right (as stored by earlier versions) gets it compiled; a
    /// text that does not compile stays text and matches nothing.
    fn compile_patterns(&mut self) {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                a.compile_patterns();
                b.compile_patterns();
            }
            Expr::Not(e) => e.compile_patterns(),
            Expr::Compare(_, Op::Matches, right) => {
                if let Operand::Text(t) = right
                    && let Ok(re) = Regex::new(t)
                {
                    *right = Operand::Regex(re);
                }
            }
            Expr::Compare(..) | Expr::Is(_) => {}
        }
    }

    /// Every lookup the condition may call.
    pub fn calls(&self, out: &mut Vec<String>) {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                a.calls(out);
                b.calls(out);
            }
            Expr::Not(e) => e.calls(out),
            Expr::Compare(a, _, b) => {
                a.calls(out);
                b.calls(out);
            }
            Expr::Is(a) => a.calls(out),
        }
    }
}

impl Operand {
    fn calls(&self, out: &mut Vec<String>) {
        match self {
            Operand::Call(name, args) => {
                out.push(name.clone());
                args.iter().for_each(|a| a.calls(out));
            }
            Operand::List(items) => items.iter().for_each(|a| a.calls(out)),
            _ => {}
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_at(f, 0)
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Field(path) => f.write_str(&path.join(".")),
            Operand::Text(s) => f.write_str(&quoted(s)),
            Operand::Regex(re) => f.write_str(&quoted(re.as_str())),
            Operand::Number(n) => write!(f, "{n}"),
            Operand::Bool(b) => write!(f, "{b}"),
            Operand::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Operand::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern(
            s.split('.')
                .map(|x| (x != "*").then(|| x.to_owned()))
                .collect(),
        )
    }

    #[test]
    fn patterns_match_segments_and_a_final_star_matches_the_rest() {
        assert!(p("hubspot.contact.created").matches("hubspot.contact.created"));
        assert!(!p("hubspot.contact.created").matches("hubspot.contact.updated"));
        assert!(p("hubspot.*").matches("hubspot.contact.created"));
        assert!(p("*").matches("gmail.email.received"));
        assert!(p("*.contact.*").matches("hubspot.contact.deleted"));
        assert!(!p("*.contact.*").matches("hubspot.deal.updated"));
        assert!(!p("hubspot.contact").matches("hubspot.contact.created"));
        assert!(!p("gmail.email.received.x").matches("gmail.email.received"));
    }

    #[test]
    fn every_matching_pattern_is_among_the_index_keys() {
        let keys = Pattern::keys_for("hubspot.contact.created");
        for pattern in [
            "hubspot.contact.created",
            "hubspot.*",
            "*",
            "*.contact.*",
            "*.*.created",
            "hubspot.contact.*",
            "*.contact.created",
        ] {
            assert!(p(pattern).matches("hubspot.contact.created"));
            assert!(
                keys.contains(&p(pattern).key()),
                "{pattern} not in {keys:?}"
            );
        }
        for k in &keys {
            assert!(p(k).matches("hubspot.contact.created"), "{k}");
        }
    }

    #[test]
    fn durations_print_in_the_largest_whole_unit() {
        assert_eq!(duration(3 * 86_400), "3d");
        assert_eq!(duration(5_400), "90m");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(1_209_600), "2w");
    }
}
