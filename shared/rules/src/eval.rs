//! Deterministic evaluation of a condition against an event view (tier 1).
//!
//! Texts compare without regard to case (addresses and domains are case-insensitive, and
//! people write `"Urgent"` for `urgent`); `matches` is a regular expression as written
//! (`(?i)` makes it case-insensitive). A missing field is null: `==` anything but null is
//! false, `!=` is true. Lookups are answered by the caller: evaluation stops at the first
//! lookup it needs and has no answer for, so only lookups a condition reaches cost I/O.

use crate::syntax::{Expr, Op, Operand};
use serde_json::{Value, json};
use std::collections::HashMap;

/// A lookup evaluation needs: `contact_exists("sara@client.example")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lookup {
    pub name: String,
    pub argument: String,
}

impl Lookup {
    pub fn key(&self) -> String {
        format!("{}({})", self.name, self.argument)
    }
}

/// Answers given so far, by [`Lookup::key`].
pub type Answers = HashMap<String, bool>;

/// Whether `expr` holds for `event`, or the lookup it needs first.
pub fn evaluate(expr: &Expr, event: &Value, answers: &Answers) -> Result<bool, Lookup> {
    Ok(match expr {
        Expr::Or(a, b) => evaluate(a, event, answers)? || evaluate(b, event, answers)?,
        Expr::And(a, b) => evaluate(a, event, answers)? && evaluate(b, event, answers)?,
        Expr::Not(e) => !evaluate(e, event, answers)?,
        Expr::Is(a) => truthy(&value(a, event, answers)?),
        Expr::Compare(a, Op::Matches, b) => {
            // The parser and the loader put a compiled pattern on the right; anything else
            // (a stored text that did not compile) matches nothing.
            let Operand::Regex(re) = b else {
                return Ok(false);
            };
            match value(a, event, answers)? {
                Value::String(s) => re.is_match(&s),
                Value::Array(items) => items
                    .iter()
                    .any(|i| i.as_str().is_some_and(|s| re.is_match(s))),
                _ => false,
            }
        }
        Expr::Compare(a, op, b) => {
            let (a, b) = (value(a, event, answers)?, value(b, event, answers)?);
            match op {
                Op::Eq => equal(&a, &b),
                Op::Ne => !equal(&a, &b),
                Op::Contains => contains(&a, &b),
                Op::In => contains(&b, &a),
                // Taken by the arm above.
                Op::Matches => false,
            }
        }
    })
}

/// The value of a field path in the event; `event.x` and `x` are the same field.
pub fn field<'v>(event: &'v Value, path: &[String]) -> Option<&'v Value> {
    let path = match path.first().map(String::as_str) {
        Some("event") if path.len() > 1 => &path[1..],
        _ => path,
    };
    let mut at = event;
    for segment in path {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

fn value(operand: &Operand, event: &Value, answers: &Answers) -> Result<Value, Lookup> {
    Ok(match operand {
        Operand::Field(path) => field(event, path).cloned().unwrap_or(Value::Null),
        Operand::Text(s) => json!(s),
        Operand::Regex(re) => json!(re.as_str()),
        Operand::Number(n) => json!(n),
        Operand::Bool(b) => json!(b),
        Operand::List(items) => Value::Array(
            items
                .iter()
                .map(|i| value(i, event, answers))
                .collect::<Result<_, _>>()?,
        ),
        Operand::Call(name, args) => {
            let argument = match args.first() {
                Some(a) => crate::template::text_of(&value(a, event, answers)?),
                None => String::new(),
            };
            // A lookup of nothing (no sender on this event) is false without asking.
            if argument.is_empty() {
                return Ok(json!(false));
            }
            let lookup = Lookup {
                name: name.clone(),
                argument: normalized(name, &argument),
            };
            match answers.get(&lookup.key()) {
                Some(answer) => json!(answer),
                None => return Err(lookup),
            }
        }
    })
}

/// Lookups take addresses: `Sara <sara@x>` asks about `sara@x`.
fn normalized(_name: &str, argument: &str) -> String {
    crate::view::address_of(argument).unwrap_or_else(|| argument.trim().to_lowercase())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.to_lowercase() == y.to_lowercase(),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        // `"3" == 3`: fields from providers are often numbers written as text.
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (x, y) => x == y,
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match haystack {
        Value::String(h) => match needle {
            Value::String(n) => h.to_lowercase().contains(&n.to_lowercase()),
            Value::Null => false,
            other => h.contains(&other.to_string()),
        },
        Value::Array(items) => items.iter().any(|i| equal(i, needle)),
        Value::Object(map) => needle.as_str().is_some_and(|k| map.contains_key(k)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_rule;

    fn condition(text: &str) -> Expr {
        parse_rule(&format!("when gmail.email.received if {text} then log"))
            .unwrap()
            .condition
            .unwrap()
    }

    fn email() -> Value {
        crate::view::build(
            "gmail",
            "email.received",
            "m1",
            "2026-11-29T00:00:00Z",
            &json!({"from": "Sara <sara@client.example>", "subject": "URGENT: rebalance", "labels": ["INBOX", "IMPORTANT"], "size": 3}),
        )
    }

    #[test]
    fn comparisons() {
        let e = email();
        let no = Answers::new();
        let yes = |c: &str| evaluate(&condition(c), &e, &no).unwrap();
        assert!(yes("from_domain == \"Client.example\""));
        assert!(yes("from_domain != \"harborwealth.example\""));
        assert!(yes("subject contains \"urgent\""));
        assert!(yes("subject matches \"^URGENT\""));
        assert!(!yes("subject matches \"^urgent\""));
        assert!(yes("labels contains \"important\""));
        assert!(yes("\"INBOX\" in labels"));
        assert!(yes(
            "from_domain in [\"client.example\", \"other.example\"]"
        ));
        assert!(yes("event.size == 3 and size == \"3\""));
        assert!(!yes("missing == \"x\""));
        assert!(yes("missing != \"x\""));
        assert!(yes("not missing"));
        assert!(yes("(missing or from_email) and not (size == 4)"));
    }

    #[test]
    fn lookups_are_asked_for_only_when_reached() {
        let e = email();
        let c = condition("from_domain != \"client.example\" and not contact_exists(from)");
        // The first part is false: no lookup is needed.
        assert_eq!(evaluate(&c, &e, &Answers::new()), Ok(false));
        let c = condition("from_domain != \"harborwealth.example\" and not contact_exists(from)");
        let need = evaluate(&c, &e, &Answers::new()).unwrap_err();
        assert_eq!(need.key(), "contact_exists(sara@client.example)");
        let mut answers = Answers::new();
        answers.insert(need.key(), false);
        assert_eq!(evaluate(&c, &e, &answers), Ok(true));
        answers.insert(need.key(), true);
        assert_eq!(evaluate(&c, &e, &answers), Ok(false));
    }
}
