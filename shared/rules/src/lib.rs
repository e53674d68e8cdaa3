//! The rule language users write and the engine runs:
//!
//! ```text
//! when <event pattern> [if <condition>] then <step> [; <step> ...]
//! ```
//!
//! - an event pattern is dotted segments where `*` stands for one segment, and a final `*` for
//!   the rest: `hubspot.contact.created`, `gmail.*`, `*`;
//! - a condition compares event fields (`==`, `!=`, `contains`, `matches`, `in`), combined with
//!   `and`, `or`, `not` and parentheses, and may call lookups (`contact_exists(from)`,
//!   `is_client(from)`);
//! - a step is an action with `name=value` parameters whose values may hold `{{event.*}}`
//!   templates, or `wait for <pattern | reply> [if <condition>] within <duration>
//!   [else <action>]`, which parks the rule's task until a matching event or the deadline.
//!
//! Parsing gives a [`Rule`]; printing it gives text that parses to the same rule. Errors say
//! the line, the column and what was expected. Evaluation is deterministic and synchronous:
//! when a condition needs a lookup the caller has not answered yet, it says which one, so the
//! caller does I/O only for lookups a condition actually reaches.

pub mod catalog;
pub mod eval;
pub mod parse;
pub mod syntax;
pub mod template;
pub mod view;

pub use eval::{Lookup, evaluate};
pub use parse::{ParseError, parse_rule, parse_steps};
pub use syntax::{Action, Expr, Op, Operand, Pattern, Rule, Step, Wait, WaitTarget};
