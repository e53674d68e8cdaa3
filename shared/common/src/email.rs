//! Email addresses as every write and rule reads them: parsed strictly, one mailbox per entry.
//!
//! A header built from an unchecked string is an injection: `sara@x\r\nBcc: eve@y` adds a
//! recipient nobody approved. Here an entry holds no control character at all and must be
//! exactly one RFC 5322 mailbox (`sara@client.example` or `Sara Lee <sara@client.example>`);
//! a text list (`a@x, "Lee, Sara" <b@y>`, as a rule's template fills it) is split by the same
//! grammar, so a quoted comma stays in its name.

use lettre::message::{Mailbox, Mailboxes};
use serde_json::Value;
use std::str::FromStr;

/// Why an address was refused, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not one email address: {problem}")]
pub struct AddressError {
    pub entry: String,
    pub problem: &'static str,
}

fn refused(entry: &str, problem: &'static str) -> AddressError {
    // Shown escaped: the entry itself may hold line breaks.
    AddressError {
        entry: entry.escape_debug().to_string(),
        problem,
    }
}

fn no_controls(entry: &str) -> Result<(), AddressError> {
    if entry.chars().any(char::is_control) {
        return Err(refused(
            entry,
            "it holds a line break or another control character",
        ));
    }
    Ok(())
}

/// Exactly one mailbox.
pub fn mailbox(entry: &str) -> Result<Mailbox, AddressError> {
    no_controls(entry)?;
    let trimmed = entry.trim();
    if trimmed.is_empty() {
        return Err(refused(entry, "it is empty"));
    }
    let list = Mailboxes::from_str(trimmed).map_err(|_| refused(entry, "it does not parse"))?;
    let mut boxes = list.into_iter();
    match (boxes.next(), boxes.next()) {
        (Some(one), None) => Ok(one),
        (Some(_), Some(_)) => Err(refused(entry, "it holds more than one address")),
        _ => Err(refused(entry, "it does not parse")),
    }
}

/// The mailboxes of an argument: a JSON list (each item one mailbox, or `{"email": ..}`) or a
/// text list as a header writes it. Null or missing is none.
pub fn mailboxes(value: &Value) -> Result<Vec<Mailbox>, AddressError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => mailbox(s),
                Value::Object(o) => match o.get("email") {
                    Some(Value::String(s)) => mailbox(s),
                    _ => Err(refused(&item.to_string(), "it is not a text")),
                },
                other => Err(refused(&other.to_string(), "it is not a text")),
            })
            .collect(),
        Value::String(s) => {
            no_controls(s)?;
            if s.trim().is_empty() {
                return Ok(Vec::new());
            }
            Mailboxes::from_str(s.trim())
                .map(|m| m.into_iter().collect())
                .map_err(|_| refused(s, "it does not parse as a list of addresses"))
        }
        other => Err(refused(&other.to_string(), "it is not a text")),
    }
}

/// A mailbox as people read it and as it is stored on an approval, which [`mailbox`] reads
/// back to the same mailbox: `Sara Lee <address>`, `"Lee, Sara" <address>` (a name with
/// specials is quoted) or the address alone, the address in lower case.
pub fn display(m: &Mailbox) -> String {
    let address = m.email.to_string().to_lowercase();
    match m.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) if name.contains(|c: char| "()<>[]:;@\\,.\"".contains(c)) => {
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\" <{address}>")
        }
        Some(name) => format!("{name} <{address}>"),
        None => address,
    }
}

/// The bare address of a mailbox, in lower case.
pub fn address(m: &Mailbox) -> String {
    m.email.to_string().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_mailbox_per_entry_and_no_line_breaks() {
        assert_eq!(
            address(&mailbox(" Sara@Client.example ").unwrap()),
            "sara@client.example"
        );
        let named = mailbox("\"Lee, Sara\" <sara@client.example>").unwrap();
        assert_eq!(display(&named), "\"Lee, Sara\" <sara@client.example>");
        // What is shown reads back to the same mailbox.
        for shown in [
            "\"Lee, Sara\" <sara@client.example>",
            "Sara Lee <sara@client.example>",
            "\"Dr. \\\"Q\\\" Lee\" <q@x.example>",
        ] {
            let m = mailbox(shown).unwrap();
            assert_eq!(mailbox(&display(&m)).unwrap(), m, "{shown}");
        }
        for bad in [
            "sara@client.example\r\nBcc: eve@evil.example",
            "sara@client.example\nBcc: eve@evil.example",
            "sara@client.example\u{0}",
            "sara@client.example, eve@evil.example",
            "sara",
            "",
            "<>",
            "sara@",
        ] {
            assert!(mailbox(bad).is_err(), "{bad:?}");
        }
        let e = mailbox("a@x.example\r\nBcc: e@y.example").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn lists_as_json_or_as_a_header() {
        let list = mailboxes(&json!(["a@x.example", {"email": "b@y.example"}])).unwrap();
        assert_eq!(
            list.iter().map(address).collect::<Vec<_>>(),
            ["a@x.example", "b@y.example"]
        );
        let header = mailboxes(&json!("a@x.example, \"Lee, Sara\" <b@y.example>")).unwrap();
        assert_eq!(header.len(), 2);
        assert_eq!(display(&header[1]), "\"Lee, Sara\" <b@y.example>");
        assert!(mailboxes(&json!(["a@x.example, b@y.example"])).is_err());
        assert!(mailboxes(&json!("a@x.example\r\nBcc: e@y.example")).is_err());
        assert!(mailboxes(&json!([1])).is_err());
        assert_eq!(mailboxes(&Value::Null).unwrap().len(), 0);
    }
}

/// Mail servers whose `Authentication-Results` are trusted: the receiving provider's own.
/// A header with another authserv-id, or below the first trusted one, may have been written by
/// the sender and is ignored (RFC 8601, section 5).
const TRUSTED_AUTHSERV_IDS: &[&str] = &["mx.google.com"];

/// Whether the provider verified that `from` (the From header) is who sent the email: the
/// first `Authentication-Results` header (topmost, added last, by the receiving server) says
/// DMARC passed for the From domain, or both SPF and DKIM passed for domains aligned with it.
pub fn sender_verified(from: &str, authentication_results: &[String]) -> bool {
    let Some(domain) = mailbox(from).ok().map(|m| m.email.domain().to_lowercase()) else {
        return false;
    };
    let Some(header) = authentication_results.first() else {
        return false;
    };
    let mut parts = header.split(';').map(str::trim);
    let authserv = parts
        .next()
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_default()
        .to_lowercase();
    if !TRUSTED_AUTHSERV_IDS.contains(&authserv.as_str()) {
        return false;
    }
    let aligned = |d: &str| {
        let d = d.trim().trim_start_matches('@').to_lowercase();
        let d = d.rsplit_once('@').map_or(d.as_str(), |(_, d)| d).to_owned();
        !d.is_empty()
            && (d == domain
                || d.ends_with(&format!(".{domain}"))
                || domain.ends_with(&format!(".{d}")))
    };
    let (mut dmarc, mut spf, mut dkim) = (false, false, false);
    for result in parts {
        // `method=result (comment) ptype.property=value ...`
        let mut words = result.split_whitespace();
        let Some((method, outcome)) = words.next().and_then(|w| w.split_once('=')) else {
            continue;
        };
        if !outcome.eq_ignore_ascii_case("pass") {
            continue;
        }
        let props: Vec<(String, String)> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_lowercase(), v.trim_end_matches(')').to_owned()))
            .collect();
        let prop = |name: &str| {
            props
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match method.to_lowercase().as_str() {
            "dmarc" => dmarc |= prop("header.from").is_some_and(aligned),
            "spf" => spf |= prop("smtp.mailfrom").is_some_and(aligned),
            "dkim" => {
                dkim |= prop("header.d").or(prop("header.i")).is_some_and(aligned);
            }
            _ => {}
        }
    }
    dmarc || (spf && dkim)
}

#[cfg(test)]
mod verified {
    use super::*;

    fn results(h: &str) -> Vec<String> {
        vec![h.to_owned()]
    }

    #[test]
    fn dmarc_or_spf_and_dkim_aligned_with_the_from_domain() {
        let from = "Sara Smith <sara@client.example>";
        let dmarc = "mx.google.com; dkim=pass header.i=@client.example header.s=s1; spf=pass (google.com: domain of sara@client.example designates 1.2.3.4) smtp.mailfrom=sara@client.example; dmarc=pass (p=REJECT) header.from=client.example";
        assert!(sender_verified(from, &results(dmarc)));
        let both = "mx.google.com; dkim=pass header.i=@mail.client.example; spf=pass smtp.mailfrom=bounce@client.example";
        assert!(sender_verified(from, &results(both)));
        // SPF alone is not enough; neither is a pass for another domain.
        let spf_only = "mx.google.com; spf=pass smtp.mailfrom=sara@client.example; dkim=none";
        assert!(!sender_verified(from, &results(spf_only)));
        let other = "mx.google.com; dmarc=pass header.from=client-exarnple.com";
        assert!(!sender_verified(from, &results(other)));
        let failed = "mx.google.com; dmarc=fail (p=NONE) header.from=client.example";
        assert!(!sender_verified(from, &results(failed)));
        // A header the sender wrote (another server, or below the provider's) is not trusted.
        let forged = "evil.example; dmarc=pass header.from=client.example";
        assert!(!sender_verified(from, &results(forged)));
        let below = vec![
            "mx.google.com; dmarc=fail header.from=client.example".to_owned(),
            dmarc.to_owned(),
        ];
        assert!(!sender_verified(from, &below));
        assert!(!sender_verified(from, &[]));
        assert!(!sender_verified("not an address", &results(dmarc)));
    }
}
