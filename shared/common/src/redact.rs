//! Redaction at the log formatter: every log line passes through [`Redactor`] before it is
//! written, so an email address, a token or a configured secret never reaches the logs even
//! when a call site forgets. Call sites still log ids, not content; this is the safety net.

use regex::{Regex, RegexSet};
use std::io::Write;
use std::sync::{Arc, LazyLock};
use tracing_subscriber::fmt::MakeWriter;

/// Patterns of things that must not be logged, each with what replaces it.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // JSON Web Tokens (our API tokens, Google ID tokens, Pub/Sub push tokens).
        (r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+", "<jwt>"),
        (r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}", "Bearer <redacted>"),
        (r"whsec_[A-Za-z0-9+/=]+", "whsec_<redacted>"),
        (r"\bxox[abposre]-[A-Za-z0-9-]+", "<slack-token>"),
        (r"\bya29\.[A-Za-z0-9._-]+", "<google-token>"),
        (r"\b1//[A-Za-z0-9._-]{10,}", "<google-refresh-token>"),
        (r"\bsk-[A-Za-z0-9_-]{16,}", "<api-key>"),
        // Credentials in query strings and key=value text.
        (
            r"(?i)([?&](?:code|state|token|access_token|refresh_token|id_token|client_secret|key|q)=)[^&\s#]+",
            "${1}<redacted>",
        ),
        (
            r#"(?i)\b(client_secret|secret_key|password|access_token|refresh_token|id_token|api_key|signing_secret)(["']?\s*[:=]\s*["']?)[^\s"',}&]+"#,
            "${1}${2}<redacted>",
        ),
        (r"(?i)(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", "${1}***@"),
        (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "<email>"),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("valid pattern"), r))
    .collect()
});

static ANY: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(PATTERNS.iter().map(|(re, _)| re.as_str())).expect("valid patterns")
});

/// Removes secrets from text: the patterns above, and the deployment's own secret values.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// `secrets`: exact values to hide wherever they appear (too short ones are ignored,
    /// they would hide ordinary words).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let secrets = secrets.into_iter().filter(|s| s.len() >= 8).collect();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<secret>");
            }
        }
        if !ANY.is_match(&out) {
            return out;
        }
        for (re, replacement) in PATTERNS.iter() {
            if re.is_match(&out) {
                out = re.replace_all(&out, *replacement).into_owned();
            }
        }
        out
    }
}

/// A `MakeWriter` whose writers redact each formatted event before passing it on.
#[derive(Clone)]
pub struct RedactingMakeWriter<M> {
    inner: M,
    redactor: Redactor,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M, redactor: Redactor) -> Self {
        Self { inner, redactor }
    }
}

/// Collects one event's bytes and writes them, redacted, when dropped (the formatter drops
/// its writer after each event).
pub struct RedactingWriter<W: Write> {
    buf: Vec<u8>,
    inner: W,
    redactor: Redactor,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let _ = self.inner.write_all(self.redactor.redact(&text).as_bytes());
        let _ = self.inner.flush();
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buf: Vec::with_capacity(256),
            inner: self.inner.make_writer(),
            redactor: self.redactor.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_addresses_are_hidden() {
        let r = Redactor::new(["configured-secret-value".to_owned(), "short".to_owned()]);
        let cases = [
            (
                "user maria.lopez+tax@harbor-wealth.example signed in",
                "user <email> signed in",
            ),
            (
                "Authorization: Bearer abc.def.ghi123",
                "Authorization: Bearer <redacted>",
            ),
            (
                "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl ok",
                "token <jwt> ok",
            ),
            (
                "GET /api/auth/google/callback?code=4/0Ab&state=xyz",
                "GET /api/auth/google/callback?code=<redacted>&state=<redacted>",
            ),
            (
                "refresh_token=1//0gabcdefghijk and more",
                "refresh_token=<redacted> and more",
            ),
            (
                r#"{"access_token":"ya29.a0AfH6SMB"}"#,
                r#"{"access_token":"<redacted>"}"#,
            ),
            ("slack xoxb-1234-5678-abcdef", "slack <slack-token>"),
            (
                "key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "key whsec_<redacted>",
            ),
            (
                "postgres://app:hunter2@db:5432/x",
                "postgres://app:***@db:5432/x",
            ),
            ("uses configured-secret-value here", "uses <secret> here"),
            ("a short word stays", "a short word stays"),
            (
                "document.id=5f0c stored in 12 ms",
                "document.id=5f0c stored in 12 ms",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(r.redact(input), expected, "{input}");
        }
    }

    #[test]
    fn the_writer_redacts_whole_events() {
        #[derive(Clone, Default)]
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let make = RedactingMakeWriter::new(
            {
                let sink = sink.clone();
                move || sink.clone()
            },
            Redactor::default(),
        );
        {
            // An address split across two writes is still caught: redaction waits for the event.
            let mut w = make.make_writer();
            w.write_all(b"from ann.").unwrap();
            w.write_all(b"lee@example.com\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
            "from <email>\n"
        );
    }
}

/// What may be said of a model or embedding endpoint's error body: the identifiers of OpenAI's
/// error shape (`{"error": {"type", "code"}}`), never its message, which may echo part of a key
/// ("Incorrect API key provided: sk-abc***xyz") or of the request. Users and stored rows see
/// this, never the body.
pub fn endpoint_error(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| v.get("error").unwrap_or(v));
    let identifier = |field: &str| {
        error
            .and_then(|e| e.get(field))
            .and_then(serde_json::Value::as_str)
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            })
            .map(str::to_owned)
    };
    let named: Vec<String> = [identifier("type"), identifier("code")]
        .into_iter()
        .flatten()
        .collect();
    if named.is_empty() {
        "no error code given".into()
    } else {
        named.join(", ")
    }
}

#[cfg(test)]
mod endpoint_errors {
    use super::endpoint_error;

    /// Attack: an endpoint's 401 echoes part of the key; that body reached the turn's error
    /// and the stored row verbatim.
    #[test]
    fn only_the_error_identifiers_are_kept() {
        let body = r#"{"error": {"message": "Incorrect API key provided: sk-proj-abc123***********wxyz. You can find your API key at https://platform.example/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
        let said = endpoint_error(body);
        assert_eq!(said, "invalid_request_error, invalid_api_key");
        assert!(!said.contains("sk-"));
        assert_eq!(
            endpoint_error("upstream said: key sk-live-123 is bad"),
            "no error code given"
        );
        assert_eq!(
            endpoint_error(r#"{"error": {"code": "has spaces and sk-123"}}"#),
            "no error code given"
        );
    }
}
