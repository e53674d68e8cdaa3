//! A recursive-descent parser over the rule's characters, so every error can say where (line
//! and column, counted in characters from 1) and what was expected there.

use crate::catalog;
use crate::syntax::{Action, Expr, Op, Operand, Pattern, Regex, Rule, Step, Wait, WaitTarget};
use crate::template;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}, column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub expected: String,
    pub found: String,
}

/// How deeply a condition may nest: each `(`, `not`, `[`, lookup argument and each further
/// `and` / `or` in a chain is one level. Far below the parser's stack on any thread (tested on
/// a 512 KiB stack in a debug build) and below serde_json's read depth for the stored rule (three JSON levels
/// a level at most, against its 128).
pub const MAX_NESTING: usize = 32;

const KEYWORDS: [&str; 16] = [
    "when", "if", "then", "and", "or", "not", "contains", "matches", "in", "wait", "for", "reply",
    "within", "else", "true", "false",
];

/// Parses a whole rule: `when <pattern> [, <pattern> ...] [if <condition>] then <steps>`.
pub fn parse_rule(text: &str) -> Result<Rule, ParseError> {
    let mut p = Parser::new(text);
    p.expect_keyword(
        "when",
        "`when` to start the rule (when <event> [if <condition>] then <action>)",
    )?;
    let mut patterns = vec![p.pattern()?];
    while p.symbol(",") {
        patterns.push(p.pattern()?);
    }
    let condition = if p.keyword("if") {
        Some(p.expr()?)
    } else {
        None
    };
    let expected_then = if condition.is_some() {
        "`then` (or `and` / `or` to extend the condition)"
    } else {
        "`,` and another event, `if` or `then`"
    };
    p.expect_keyword("then", expected_then)?;
    let steps = p.steps()?;
    Ok(Rule {
        patterns,
        condition,
        steps,
    })
}

/// Parses steps alone (`send_email ...; wait for reply within 3d else notify ...`), as a task
/// started from chat is written.
pub fn parse_steps(text: &str) -> Result<Vec<Step>, ParseError> {
    let mut p = Parser::new(text);
    p.steps()
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// Levels of nesting open at `pos` (see [`MAX_NESTING`]).
    depth: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            depth: 0,
        }
    }

    /// Opens one more level of nesting at `at`, or says the condition nests too deeply.
    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        if self.depth >= MAX_NESTING {
            return Err(self.error_at(
                at,
                format!(
                    "a condition nested at most {MAX_NESTING} levels deep (parentheses, `not`, lists, lookups and chained `and` / `or` each count)"
                ),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn error_at(&self, pos: usize, expected: impl Into<String>) -> ParseError {
        let before = &self.src[..pos];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        let rest = self.src[pos..].trim_start();
        let found = match rest.chars().next() {
            None => "the end of the rule".to_owned(),
            Some('"') => "a quoted text".to_owned(),
            Some(c) if is_word_char(c) => {
                let word: String = rest.chars().take_while(|c| is_word_char(*c)).collect();
                format!("`{word}`")
            }
            Some(c) => format!("`{c}`"),
        };
        ParseError {
            line,
            column,
            expected: expected.into(),
            found,
        }
    }

    fn error(&mut self, expected: impl Into<String>) -> ParseError {
        self.skip_ws();
        self.error_at(self.pos, expected)
    }

    /// The next word, not consumed.
    fn peek_word(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|(_, c)| !is_word_char(*c))
            .map_or(rest.len(), |(i, _)| i);
        (end > 0).then(|| &rest[..end])
    }

    fn keyword(&mut self, k: &str) -> bool {
        match self.peek_word() {
            // `reply.x` is a pattern, not the keyword `reply`.
            Some(w) if w.eq_ignore_ascii_case(k) && !self.rest()[w.len()..].starts_with('.') => {
                self.pos += w.len();
                true
            }
            _ => false,
        }
    }

    fn expect_keyword(&mut self, k: &str, expected: &str) -> Result<(), ParseError> {
        if self.keyword(k) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn symbol(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn pattern(&mut self) -> Result<Pattern, ParseError> {
        const EXPECTED: &str =
            "an event pattern such as `gmail.email.received`, `hubspot.*` or `*`";
        self.skip_ws();
        let mut segments = Vec::new();
        loop {
            if self.rest().starts_with('*') {
                self.pos += 1;
                segments.push(None);
            } else {
                let rest = self.rest();
                let end = rest
                    .char_indices()
                    .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                    .map_or(rest.len(), |(i, _)| i);
                if end == 0 {
                    return Err(self.error_at(self.pos, EXPECTED));
                }
                segments.push(Some(rest[..end].to_ascii_lowercase()));
                self.pos += end;
            }
            if self.rest().starts_with('.') {
                self.pos += 1;
            } else {
                break;
            }
        }
        if segments.len() == 1 && segments[0].is_some() {
            return Err(self.error_at(
                self.pos,
                "`.` and more of the event type (`gmail.email.received`), or `*`",
            ));
        }
        Ok(Pattern(segments))
    }

    fn steps(&mut self) -> Result<Vec<Step>, ParseError> {
        let mut steps = vec![self.step()?];
        loop {
            if self.symbol(";") {
                self.skip_ws();
                if self.peek().is_none() {
                    break;
                }
                steps.push(self.step()?);
            } else {
                self.skip_ws();
                if self.peek().is_some() {
                    return Err(self.error("`;` before the next step, or the end of the rule"));
                }
                break;
            }
        }
        Ok(steps)
    }

    fn step(&mut self) -> Result<Step, ParseError> {
        if self.keyword("wait") {
            return self.wait().map(Step::Wait);
        }
        self.action().map(Step::Act)
    }

    fn wait(&mut self) -> Result<Wait, ParseError> {
        self.expect_keyword("for", "`for` (wait for <event or reply> within <duration>)")?;
        let target = if self.keyword("reply") {
            WaitTarget::Reply
        } else {
            WaitTarget::Event(self.pattern()?)
        };
        let condition = if self.keyword("if") {
            Some(self.expr()?)
        } else {
            None
        };
        self.expect_keyword(
            "within",
            "`within` and how long to wait (`within 3d`): a wait always ends",
        )?;
        let within_secs = self.duration()?;
        let otherwise = if self.keyword("else") {
            Some(self.action()?)
        } else {
            None
        };
        Ok(Wait {
            target,
            condition,
            within_secs,
            otherwise,
        })
    }

    fn duration(&mut self) -> Result<u64, ParseError> {
        const EXPECTED: &str = "a duration such as `3d`, `12h`, `30m` or `45s`";
        self.skip_ws();
        let start = self.pos;
        let digits: String = self
            .rest()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let unit = self.rest()[digits.len()..].chars().next();
        let size = match unit {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            Some('w') => 604_800,
            _ => return Err(self.error_at(start, EXPECTED)),
        };
        let after = self.rest()[digits.len() + 1..].chars().next();
        let n: u64 = match digits.parse() {
            Ok(n) if n > 0 && !after.is_some_and(is_word_char) => n,
            _ => return Err(self.error_at(start, EXPECTED)),
        };
        self.pos += digits.len() + 1;
        n.checked_mul(size)
            .filter(|s| *s <= 366 * 86_400)
            .ok_or_else(|| self.error_at(start, "a duration of at most a year"))
    }

    fn action(&mut self) -> Result<Action, ParseError> {
        self.skip_ws();
        let start = self.pos;
        let expected = || format!("an action ({})", catalog::action_names());
        let Some(name) = self.peek_word() else {
            return Err(self.error_at(start, expected()));
        };
        let Some(spec) = catalog::action(name) else {
            return Err(self.error_at(start, expected()));
        };
        self.pos += name.len();
        let mut params: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_ws();
            let at = self.pos;
            let Some(key) = self.peek_word() else { break };
            if KEYWORDS.contains(&key) || !self.rest()[key.len()..].trim_start().starts_with('=') {
                break;
            }
            let allowed = spec.required.contains(&key) || spec.optional.contains(&key) || spec.open;
            if !allowed {
                let known: Vec<&str> = spec.required.iter().chain(spec.optional).copied().collect();
                return Err(self.error_at(
                    at,
                    format!("a parameter of {} ({})", spec.name, known.join(", ")),
                ));
            }
            if params.iter().any(|(k, _)| k == key) {
                return Err(self.error_at(at, format!("`{key}` only once")));
            }
            self.pos += key.len();
            self.symbol("=");
            self.skip_ws();
            let value_at = self.pos;
            let value = if self.peek() == Some('"') {
                self.string()?
            } else {
                let raw: String = self
                    .rest()
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '"')
                    .collect();
                if raw.is_empty() {
                    return Err(self.error_at(value_at, format!("a value after `{key}=`")));
                }
                self.pos += raw.len();
                raw
            };
            if let Err(problem) = template::check(&value) {
                return Err(self.error_at(value_at, format!("a valid template: {problem}")));
            }
            params.push((key.to_owned(), value));
        }
        if let Some(missing) = spec
            .required
            .iter()
            .find(|r| !params.iter().any(|(k, _)| k == *r))
        {
            return Err(self.error(format!("parameter `{missing}=` for {}", spec.name)));
        }
        Ok(Action {
            name: spec.name.to_owned(),
            params,
        })
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, c @ ('"' | '\\'))) => out.push(c),
                    _ => {
                        return Err(
                            self.error_at(self.pos + i, "an escape: \\\", \\\\, \\n, \\t or \\r")
                        );
                    }
                },
                c => out.push(c),
            }
        }
        Err(self.error_at(start, "a closing `\"` for this text"))
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let opened = self.depth;
        let mut left = self.and()?;
        loop {
            self.skip_ws();
            let at = self.pos;
            if !self.keyword("or") {
                break;
            }
            // Each `or` in a chain nests the tree one level deeper.
            self.enter(at)?;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        self.depth = opened;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let opened = self.depth;
        let mut left = self.unary()?;
        loop {
            self.skip_ws();
            let at = self.pos;
            if !self.keyword("and") {
                break;
            }
            self.enter(at)?;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        self.depth = opened;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        let at = self.pos;
        if self.keyword("not") {
            self.enter(at)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.symbol("(") {
            self.enter(at)?;
            let inner = self.expr()?;
            if !self.symbol(")") {
                return Err(self.error("`)`"));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        let op = if self.symbol("==") {
            Op::Eq
        } else if self.symbol("!=") {
            Op::Ne
        } else if self.keyword("contains") {
            Op::Contains
        } else if self.keyword("matches") {
            Op::Matches
        } else if self.keyword("in") {
            Op::In
        } else {
            return Ok(Expr::Is(left));
        };
        self.skip_ws();
        let right_at = self.pos;
        let right = self.operand()?;
        if op == Op::Matches {
            // Compiled here, once: evaluation never compiles.
            return match right {
                Operand::Text(re) => {
                    match Regex::new(&re) {
                        Ok(re) => Ok(Expr::Compare(left, op, Operand::Regex(re))),
                        Err(problem) => Err(self
                            .error_at(right_at, format!("a valid regular expression ({problem})"))),
                    }
                }
                _ => Err(self.error_at(right_at, "a quoted regular expression after `matches`")),
            };
        }
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        const EXPECTED: &str = "a field (from, subject...), a quoted text, a number, a [list] or a lookup such as contact_exists(from)";
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some('"') => return self.string().map(Operand::Text),
            Some('[') => {
                self.enter(start)?;
                self.pos += 1;
                let mut items = Vec::new();
                if !self.symbol("]") {
                    loop {
                        items.push(self.operand()?);
                        if self.symbol("]") {
                            break;
                        }
                        if !self.symbol(",") {
                            return Err(self.error("`,` or `]`"));
                        }
                    }
                }
                self.depth -= 1;
                return Ok(Operand::List(items));
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let text: String = self
                    .rest()
                    .chars()
                    .enumerate()
                    .take_while(|(i, c)| c.is_ascii_digit() || *c == '.' || (*i == 0 && *c == '-'))
                    .map(|(_, c)| c)
                    .collect();
                return match text.parse::<f64>() {
                    Ok(n) if n.is_finite() => {
                        self.pos += text.len();
                        Ok(Operand::Number(n))
                    }
                    _ => Err(self.error_at(start, EXPECTED)),
                };
            }
            _ => {}
        }
        let Some(word) = self.peek_word() else {
            return Err(self.error_at(start, EXPECTED));
        };
        match word {
            "true" | "false" => {
                self.pos += word.len();
                return Ok(Operand::Bool(word == "true"));
            }
            w if KEYWORDS.contains(&w) => return Err(self.error_at(start, EXPECTED)),
            _ => {}
        }
        self.pos += word.len();
        if self.rest().starts_with('(') {
            if !catalog::is_lookup(word) {
                let known: Vec<&str> = catalog::LOOKUPS.iter().map(|(n, _)| *n).collect();
                return Err(self.error_at(start, format!("a lookup ({})", known.join(", "))));
            }
            self.enter(start)?;
            self.pos += 1;
            let argument = self.operand()?;
            if !self.symbol(")") {
                return Err(self.error(format!("`)` after the one argument of {word}")));
            }
            self.depth -= 1;
            return Ok(Operand::Call(word.to_owned(), vec![argument]));
        }
        let mut path = vec![word.to_owned()];
        while self.rest().starts_with('.') {
            self.pos += 1;
            let rest = self.rest();
            let end = rest
                .char_indices()
                .find(|(_, c)| !is_word_char(*c))
                .map_or(rest.len(), |(i, _)| i);
            if end == 0 {
                return Err(self.error_at(self.pos, "a field name after `.`"));
            }
            path.push(rest[..end].to_owned());
            self.pos += end;
        }
        Ok(Operand::Field(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::Steps;
    use proptest::prelude::*;

    #[test]
    fn parses_the_issue_examples() {
        let r = parse_rule(
            "when hubspot.contact.created then create_task type=welcome_email priority=high",
        )
        .unwrap();
        assert_eq!(r.trigger(), "when hubspot.contact.created");
        assert!(r.condition.is_none());
        let Step::Act(a) = &r.steps[0] else { panic!() };
        assert_eq!(a.name, "create_task");
        assert_eq!(a.param("priority"), Some("high"));

        let r = parse_rule(
            "when gmail.email.received if from_domain != \"harborwealth.example\" and not contact_exists(from) then create_contact email={{event.from}}",
        )
        .unwrap();
        let Some(Expr::And(left, right)) = &r.condition else {
            panic!("{:?}", r.condition)
        };
        assert_eq!(
            **left,
            Expr::Compare(
                Operand::Field(vec!["from_domain".into()]),
                Op::Ne,
                Operand::Text("harborwealth.example".into())
            )
        );
        assert!(matches!(**right, Expr::Not(_)));
        let Step::Act(a) = &r.steps[0] else { panic!() };
        assert_eq!(a.param("email"), Some("{{event.from}}"));
    }

    #[test]
    fn a_rule_may_concern_several_event_types() {
        let r = parse_rule(
            "when gmail.email.received, slack.message.posted if snippet contains \"rebalance\" then notify text=x",
        )
        .unwrap();
        assert!(r.concerns("gmail.email.received") && r.concerns("slack.message.posted"));
        assert!(!r.concerns("gmail.email.sent"));
        assert_eq!(r.keys(), ["gmail.email.received", "slack.message.posted"]);
        assert_eq!(
            r.trigger(),
            "when gmail.email.received, slack.message.posted if snippet contains \"rebalance\""
        );
    }

    #[test]
    fn parses_waits_and_several_steps() {
        let steps = parse_steps(
            "send_email to=sara@client.example subject=\"When are you free?\" body=\"Hi Sara\";\n wait for reply within 3d else notify text=\"Sara has not replied\"; ask_assistant text=\"book the meeting she proposes\"",
        )
        .unwrap();
        assert_eq!(steps.len(), 3);
        let Step::Wait(w) = &steps[1] else { panic!() };
        assert_eq!(w.target, WaitTarget::Reply);
        assert_eq!(w.within_secs, 3 * 86_400);
        assert_eq!(w.otherwise.as_ref().unwrap().name, "notify");
    }

    #[test]
    fn errors_name_line_column_and_what_was_expected() {
        let e = parse_rule("when gmail.email.received\nif from == \"a\" thn log").unwrap_err();
        assert_eq!((e.line, e.column), (2, 16));
        assert!(e.expected.contains("`then`"), "{e}");
        assert_eq!(e.found, "`thn`");

        let e = parse_rule("when gmail.email.received then frobnicate x=1").unwrap_err();
        assert_eq!((e.line, e.column), (1, 32));
        assert!(e.expected.contains("create_contact"), "{e}");

        let e = parse_rule("when gmail.email.received then create_contact").unwrap_err();
        assert!(e.expected.contains("email="), "{e}");
        assert_eq!(e.found, "the end of the rule");

        let e = parse_rule("if x then log").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));

        let e =
            parse_rule("when gmail.email.received if subject matches \"(\" then log").unwrap_err();
        assert!(e.expected.contains("regular expression"), "{e}");
        assert_eq!(e.column, 46);

        let e = parse_rule("when gmail then log").unwrap_err();
        assert!(e.expected.contains("event type"), "{e}");

        let e = parse_rule("when gmail.* then notify text={{from}}").unwrap_err();
        assert!(e.expected.contains("template"), "{e}");

        let e = parse_rule("when gmail.* then wait for reply else log").unwrap_err();
        assert!(e.expected.contains("within"), "{e}");
    }

    /// The deepest condition of each kind the limit allows, and one level more.
    fn nested(kind: &str, levels: usize) -> String {
        match kind {
            "paren" => format!("{}x{}", "(".repeat(levels), ")".repeat(levels)),
            "not" => format!("{}x", "not ".repeat(levels)),
            "list" => format!("x in {}1{}", "[".repeat(levels), "]".repeat(levels)),
            "lookup" => format!(
                "{}from{}",
                "contact_exists(".repeat(levels),
                ")".repeat(levels)
            ),
            "and" => vec!["x"; levels + 1].join(" and "),
            "or" => vec!["x"; levels + 1].join(" or "),
            "mixed" => format!(
                "{}{}x == 1{}",
                "not (".repeat(levels / 2),
                "not ".repeat(levels % 2),
                ")".repeat(levels / 2)
            ),
            _ => unreachable!(),
        }
    }

    const KINDS: [&str; 7] = ["paren", "not", "list", "lookup", "and", "or", "mixed"];

    /// Attack: `when a.b if ` + 1,985 × `(` + `x then log` overflowed a worker's stack and
    /// aborted the gateway; ~130 nested `not`s parsed, and the stored JSON then exceeded
    /// serde_json's read depth, so the user's rules stopped loading. The deepest condition the
    /// limit allows parses on a small stack (a quarter of a tokio worker's 2 MiB, in a debug
    /// build) and reads back from its stored JSON; one level more is an error naming the
    /// position.
    #[test]
    fn nesting_is_bounded_far_below_the_stack_and_the_stored_forms_read_depth() {
        let run = || {
            for kind in KINDS {
                let deepest = nested(kind, MAX_NESTING);
                let rule = parse_rule(&format!("when a.b if {deepest} then log"))
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                // Printed, it parses again; stored, it reads back (within serde's depth),
                // also as an instruction's `{"rule": ...}`.
                assert_eq!(parse_rule(&rule.to_string()).unwrap(), rule, "{kind}");
                let stored = serde_json::to_string(&serde_json::json!({"rule": rule})).unwrap();
                let back: serde_json::Value = serde_json::from_str(&stored).unwrap();
                let back: Rule = serde_json::from_value(back["rule"].clone()).unwrap();
                assert_eq!(back, rule, "{kind}");
                let steps = format!("wait for reply if {deepest} within 1d");
                assert!(parse_steps(&steps).is_ok(), "{kind}");

                let deeper = nested(kind, MAX_NESTING + 1);
                let e = parse_rule(&format!("when a.b if {deeper} then log")).unwrap_err();
                assert!(e.expected.contains("nested at most 32"), "{kind}: {e}");
                assert_eq!(e.line, 1);
                assert!(e.column > 12, "{kind}: {e}");
            }
            // The issue's input itself.
            let attack = format!("when a.b if {}x then log", "(".repeat(1_985));
            let e = parse_rule(&attack).unwrap_err();
            assert_eq!(e.column, 13 + MAX_NESTING);
        };
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn patterns_are_compiled_when_parsed_and_when_read_back() {
        let rule = parse_rule("when a.b if subject matches \"^re:\" then log").unwrap();
        let Some(Expr::Compare(_, Op::Matches, Operand::Regex(re))) = &rule.condition else {
            panic!("{:?}", rule.condition)
        };
        assert_eq!(re.as_str(), "^re:");
        // A rule stored with the pattern as text (before this version) compiles on reading.
        let old = serde_json::json!({"patterns": [["a", "b"]], "steps": [{"step": "act", "name": "log", "params": []}],
            "condition": {"expr": "compare", "of": [{"operand": "field", "value": ["subject"]}, "matches", {"operand": "text", "value": "^re:"}]}});
        let read: Rule = serde_json::from_value(old).unwrap();
        assert_eq!(read, rule);
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,6}".prop_filter("not a keyword", |w| !KEYWORDS.contains(&w.as_str()))
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -z|~\n\t\"\\\\]{0,12}"
    }

    fn operand() -> impl Strategy<Value = Operand> {
        let leaf = prop_oneof![
            proptest::collection::vec(word(), 1..3).prop_map(Operand::Field),
            text().prop_map(Operand::Text),
            (-1000i64..1000, 0u8..4)
                .prop_map(|(n, d)| Operand::Number(n as f64 / 10f64.powi(d as i32))),
            any::<bool>().prop_map(Operand::Bool),
            word().prop_map(|w| Operand::Call(
                "contact_exists".into(),
                vec![Operand::Field(vec![w])]
            )),
        ];
        leaf.prop_recursive(2, 6, 3, |inner| {
            proptest::collection::vec(inner, 0..3).prop_map(Operand::List)
        })
    }

    fn expr() -> impl Strategy<Value = Expr> {
        let op = prop_oneof![Just(Op::Eq), Just(Op::Ne), Just(Op::Contains), Just(Op::In)];
        let leaf = prop_oneof![
            (operand(), op, operand()).prop_map(|(a, o, b)| Expr::Compare(a, o, b)),
            (operand(), Just(Op::Matches), "[a-z]{1,5}\\.?\\*?").prop_map(|(a, o, b)| {
                Expr::Compare(a, o, Operand::Regex(Regex::new(&b).unwrap()))
            }),
            operand().prop_map(Expr::Is),
        ];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            text().prop_map(|t| Action {
                name: "notify".into(),
                params: vec![("text".into(), t)]
            }),
            ("[a-z@.]{1,10}", text()).prop_map(|(e, f)| Action {
                name: "create_contact".into(),
                params: vec![("email".into(), e), ("firstname".into(), f)],
            }),
            Just(Action {
                name: "notify".into(),
                params: vec![("text".into(), "{{event.from}} wrote".into())]
            }),
            Just(Action {
                name: "log".into(),
                params: vec![]
            }),
        ]
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        proptest::collection::vec(proptest::option::of("[a-z][a-z_]{0,5}"), 2..4).prop_map(Pattern)
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            action().prop_map(Step::Act),
            (
                prop_oneof![
                    Just(WaitTarget::Reply),
                    pattern().prop_map(WaitTarget::Event)
                ],
                proptest::option::of(expr()),
                1u64..2_000_000,
                proptest::option::of(action()),
            )
                .prop_map(|(target, condition, within_secs, otherwise)| Step::Wait(
                    Wait {
                        target,
                        condition,
                        within_secs,
                        otherwise
                    }
                )),
        ]
    }

    fn rule() -> impl Strategy<Value = Rule> {
        (
            proptest::collection::vec(prop_oneof![pattern(), Just(Pattern::any())], 1..3),
            proptest::option::of(expr()),
            proptest::collection::vec(step(), 1..4),
        )
            .prop_map(|(patterns, condition, steps)| Rule {
                patterns,
                condition,
                steps,
            })
    }

    proptest! {
        #[test]
        fn print_then_parse_gives_the_same_rule(r in rule()) {
            let printed = r.to_string();
            let parsed = parse_rule(&printed).map_err(|e| TestCaseError::fail(format!("{printed}\n{e}")))?;
            prop_assert_eq!(&parsed, &r, "{}", printed);
            prop_assert_eq!(parsed.to_string(), printed);
            let steps = Steps(&r.steps).to_string();
            prop_assert_eq!(parse_steps(&steps).unwrap(), r.steps.clone());
        }
    }
}
