//! The email `send_email` sends, built by a maintained MIME library (lettre's builder) from
//! arguments [`crate::writes::prepare`] checked: every header is encoded by the library, so no
//! text can add a header, and the recipients are exactly those the approval showed.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use serde_json::Value;

/// The RFC 5322 message, ready for Gmail's `raw`.
pub fn message(from: &str, args: &Value, message_id: &str) -> Result<Vec<u8>, String> {
    let one = |entry: &str, field: &str| -> Result<Mailbox, String> {
        common::email::mailbox(entry).map_err(|e| format!("{field}: {e}"))
    };
    let many = |field: &str| -> Result<Vec<Mailbox>, String> {
        common::email::mailboxes(&args[field]).map_err(|e| format!("{field}: {e}"))
    };
    let mut builder = Message::builder()
        .from(one(from, "from")?)
        .message_id(Some(message_id.to_owned()))
        .subject(args["subject"].as_str().unwrap_or_default())
        .header(ContentType::TEXT_PLAIN);
    let to = many("to")?;
    if to.is_empty() {
        return Err("to must list at least one email address".into());
    }
    for m in to {
        builder = builder.to(m);
    }
    for m in many("cc")? {
        builder = builder.cc(m);
    }
    let message = builder
        .body(args["body"].as_str().unwrap_or_default().to_owned())
        .map_err(|e| format!("the email could not be built: {e}"))?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(raw: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(raw);
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        head.split("\r\n").map(str::to_owned).collect()
    }

    /// Attack: a CR/LF inside an address (or the subject) added a `Bcc:` the approval never
    /// showed. Addresses with control characters are refused; a subject can only be encoded.
    #[test]
    fn no_text_adds_a_header() {
        let args = json!({"to": ["sara@client.example\r\nBcc: eve@evil.example"], "subject": "Hi", "body": "x"});
        assert!(message("dana@harborwealth.example", &args, "<a@b>").is_err());
        let args = json!({"to": ["Sara Lee <sara@client.example>"], "cc": ["ops@harborwealth.example"],
            "subject": "Review\r\nBcc: eve@evil.example", "body": "Line one\r\nBcc: eve@evil.example\r\n"});
        let raw = message(
            "dana@harborwealth.example",
            &args,
            "<asst1@assistant.invalid>",
        )
        .unwrap();
        let headers = headers(&raw);
        assert!(
            !headers
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("bcc")),
            "{headers:#?}"
        );
        assert!(
            headers.contains(&"To: \"Sara Lee\" <sara@client.example>".to_owned()),
            "{headers:#?}"
        );
        assert!(
            headers.contains(&"Cc: ops@harborwealth.example".to_owned()),
            "{headers:#?}"
        );
        assert!(
            headers.contains(&"Message-ID: <asst1@assistant.invalid>".to_owned()),
            "{headers:#?}"
        );
        assert!(
            headers.contains(&"From: dana@harborwealth.example".to_owned()),
            "{headers:#?}"
        );
    }

    #[test]
    fn text_beyond_ascii_is_encoded() {
        let args =
            json!({"to": ["sara@client.example"], "subject": "Überweisung", "body": "Grüße"});
        let raw = message("dana@harborwealth.example", &args, "<a@b>").unwrap();
        assert!(raw.is_ascii(), "{}", String::from_utf8_lossy(&raw));
    }
}
