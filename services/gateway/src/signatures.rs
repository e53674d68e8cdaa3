//! Webhook verification in one place: Standard Webhooks (generic senders) and each provider's
//! signature scheme, exactly as documented. Pure functions over the raw request parts, tested
//! against the published vectors; one error type, which the gateway answers with 401 and
//! nothing published. (Gmail push tokens are OIDC JWTs: `google_jwt.rs`.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// HubSpot and Slack both refuse requests more than five minutes from now, either way.
pub const WINDOW_SECS: i64 = 5 * 60;

/// Why a delivery is not believed. The message is what the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header the scheme needs, as the sender spells it.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// The timestamp header (named) is not a number.
    #[error("{0} is not a number")]
    BadTimestamp(&'static str),
    #[error("{0} is more than 5 minutes from now")]
    Stale(&'static str),
    /// The one signature given does not match.
    #[error("signature does not match")]
    Mismatch,
    /// None of the signatures given matches (Standard Webhooks; also an unusable secret or
    /// an unknown endpoint, which must look the same to the sender).
    #[error("no signature matches")]
    NoMatch,
    /// Refused for a reason of the scheme's own (an expired channel, a legacy signature).
    #[error("{0}")]
    Refused(&'static str),
}

impl From<SignatureError> for crate::error::ApiError {
    fn from(e: SignatureError) -> Self {
        crate::error::ApiError::WebhookRejected(e.to_string())
    }
}

/// Parses a timestamp and checks it is within [`WINDOW_SECS`] of `now`, either way; both in
/// the same unit, `units_per_sec` of them a second (1 for seconds, 1000 for milliseconds).
/// Standard Webhooks, HubSpot v3 and Slack all use this window.
pub fn check_window(timestamp: &str, now: i64, units_per_sec: i64) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp("timestamp"))?;
    if (now - ts).abs() > WINDOW_SECS * units_per_sec {
        return Err(SignatureError::Stale("timestamp"));
    }
    Ok(())
}

fn equal(a: &[u8], b: &[u8]) -> Result<(), SignatureError> {
    if a.len() == b.len() && bool::from(a.ct_eq(b)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p);
    }
    hex::encode(hasher.finalize())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Standard Webhooks: `webhook-timestamp` (seconds) within five minutes of `now`.
pub fn check_timestamp(timestamp: &str, now: i64) -> Result<(), SignatureError> {
    check_window(timestamp, now, 1).map_err(|e| match e {
        SignatureError::BadTimestamp(_) => SignatureError::BadTimestamp("webhook-timestamp"),
        _ => SignatureError::Stale("webhook-timestamp"),
    })
}

/// Standard Webhooks: base64 HMAC-SHA256 over `{id}.{timestamp}.{body}` with the base64 key
/// after `whsec_`; the header may hold several space-separated `v1,<sig>`, one is enough.
pub fn standard_webhooks(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signatures: &str,
) -> Result<(), SignatureError> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| SignatureError::NoMatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SignatureError::NoMatch)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    for candidate in signatures.split_whitespace() {
        let Some(("v1", sig)) = candidate.split_once(',') else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            continue;
        };
        // verify_slice compares in constant time.
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

/// HubSpot v1 (`X-HubSpot-Signature-Version: v1`): hex SHA-256 of client secret + body.
pub fn hubspot_v1(client_secret: &str, body: &[u8], signature: &str) -> Result<(), SignatureError> {
    let expected = sha256_hex(&[client_secret.as_bytes(), body]);
    equal(
        expected.as_bytes(),
        signature.trim().to_ascii_lowercase().as_bytes(),
    )
}

/// HubSpot v2: hex SHA-256 of client secret + method + full URI + body.
pub fn hubspot_v2(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    let expected = sha256_hex(&[
        client_secret.as_bytes(),
        method.as_bytes(),
        uri.as_bytes(),
        body,
    ]);
    equal(
        expected.as_bytes(),
        signature.trim().to_ascii_lowercase().as_bytes(),
    )
}

/// The URI as HubSpot signs it for v3: these URL-encoded characters decoded, nothing else.
pub fn hubspot_v3_uri(uri: &str) -> String {
    const DECODE: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.and_then(|c| DECODE.iter().find(|(k, _)| *k == c)) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// HubSpot v3 (`X-HubSpot-Signature-v3`): base64 HMAC-SHA256 with the client secret of
/// method + decoded URI + body + `X-HubSpot-Request-Timestamp` (milliseconds), which must be
/// within five minutes of `now_ms`.
pub fn hubspot_v3(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: &str,
    signature: &str,
    now_ms: i64,
) -> Result<(), SignatureError> {
    check_window(timestamp_ms, now_ms, 1000)?;
    let uri = hubspot_v3_uri(uri);
    let mac = hmac_sha256(
        client_secret.as_bytes(),
        &[
            method.as_bytes(),
            uri.as_bytes(),
            body,
            timestamp_ms.trim().as_bytes(),
        ],
    );
    let given = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    equal(&mac, &given)
}

/// Slack: `v0=` + hex HMAC-SHA256 with the signing secret of `v0:{timestamp}:{body}`;
/// `X-Slack-Request-Timestamp` (seconds) within five minutes of `now`.
pub fn slack(
    signing_secret: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), SignatureError> {
    check_window(timestamp, now, 1)?;
    let mac = hmac_sha256(
        signing_secret.as_bytes(),
        &[b"v0:", timestamp.trim().as_bytes(), b":", body],
    );
    let expected = format!("v0={}", hex::encode(mac));
    equal(expected.as_bytes(), signature.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUBSPOT_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const HUBSPOT_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn hubspot_v1_published_vector() {
        let sig = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
        assert_eq!(
            hubspot_v1(HUBSPOT_SECRET, HUBSPOT_BODY.as_bytes(), sig),
            Ok(())
        );
        let tampered = HUBSPOT_BODY.replace("\"objectId\":123", "\"objectId\":124");
        assert_eq!(
            hubspot_v1(HUBSPOT_SECRET, tampered.as_bytes(), sig),
            Err(SignatureError::Mismatch)
        );
        assert!(hubspot_v1("another-secret", HUBSPOT_BODY.as_bytes(), sig).is_err());
    }

    #[test]
    fn hubspot_v2_published_vector() {
        let sig = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
        let uri = "https://www.example.com/webhook_uri";
        assert_eq!(hubspot_v2(HUBSPOT_SECRET, "GET", uri, b"", sig), Ok(()));
        assert!(hubspot_v2(HUBSPOT_SECRET, "POST", uri, b"", sig).is_err());
        assert!(
            hubspot_v2(
                HUBSPOT_SECRET,
                "GET",
                "https://www.example.com/other",
                b"",
                sig
            )
            .is_err()
        );
    }

    #[test]
    fn slack_published_vector_and_window() {
        let now: i64 = SLACK_TS.parse().unwrap();
        assert_eq!(
            slack(
                SLACK_SECRET,
                SLACK_TS,
                SLACK_BODY.as_bytes(),
                SLACK_SIG,
                now + 60
            ),
            Ok(())
        );
        let mut tampered = SLACK_BODY.as_bytes().to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            slack(SLACK_SECRET, SLACK_TS, &tampered, SLACK_SIG, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            slack(
                SLACK_SECRET,
                SLACK_TS,
                SLACK_BODY.as_bytes(),
                SLACK_SIG,
                now + 301
            ),
            Err(SignatureError::Stale("timestamp"))
        );
        assert_eq!(
            slack(
                SLACK_SECRET,
                SLACK_TS,
                SLACK_BODY.as_bytes(),
                SLACK_SIG,
                now - 301
            ),
            Err(SignatureError::Stale("timestamp"))
        );
        assert_eq!(
            slack(SLACK_SECRET, "", SLACK_BODY.as_bytes(), SLACK_SIG, now),
            Err(SignatureError::BadTimestamp("timestamp"))
        );
    }

    #[test]
    fn hubspot_v3_decodes_only_the_documented_characters() {
        assert_eq!(
            hubspot_v3_uri("https://example.com/hook%3Fa%3Db%2Cc%40d?x=%20y%2f%21%zz"),
            "https://example.com/hook?a%3Db,c@d?x=%20y/!%zz"
        );
    }

    #[test]
    fn hubspot_v3_signs_method_uri_body_and_timestamp_within_five_minutes() {
        let now_ms = 1_700_000_000_000i64;
        let ts = (now_ms - 1_000).to_string();
        let uri = "https://app.example.com/api/webhooks/hubspot";
        // Sign independently of the code under test: the documented source string.
        let source = format!("POST{uri}{HUBSPOT_BODY}{ts}");
        let sig = STANDARD.encode(hmac_sha256(HUBSPOT_SECRET.as_bytes(), &[source.as_bytes()]));
        assert_eq!(
            hubspot_v3(
                HUBSPOT_SECRET,
                "POST",
                uri,
                HUBSPOT_BODY.as_bytes(),
                &ts,
                &sig,
                now_ms
            ),
            Ok(())
        );
        // The request line may carry encoded characters HubSpot decodes before signing.
        let encoded = "https%3A%2F%2Fapp.example.com%2Fapi%2Fwebhooks%2Fhubspot";
        assert_eq!(
            hubspot_v3(
                HUBSPOT_SECRET,
                "POST",
                encoded,
                HUBSPOT_BODY.as_bytes(),
                &ts,
                &sig,
                now_ms
            ),
            Ok(())
        );
        let body = HUBSPOT_BODY.replace("62515", "62516");
        assert_eq!(
            hubspot_v3(
                HUBSPOT_SECRET,
                "POST",
                uri,
                body.as_bytes(),
                &ts,
                &sig,
                now_ms
            ),
            Err(SignatureError::Mismatch)
        );
        let late = now_ms + 301_000;
        assert_eq!(
            hubspot_v3(
                HUBSPOT_SECRET,
                "POST",
                uri,
                HUBSPOT_BODY.as_bytes(),
                &ts,
                &sig,
                late
            ),
            Err(SignatureError::Stale("timestamp"))
        );
        let early = now_ms - 1_000 - 301_000;
        assert_eq!(
            hubspot_v3(
                HUBSPOT_SECRET,
                "POST",
                uri,
                HUBSPOT_BODY.as_bytes(),
                &ts,
                &sig,
                early
            ),
            Err(SignatureError::Stale("timestamp"))
        );
        assert_eq!(
            hubspot_v3(
                HUBSPOT_SECRET,
                "POST",
                uri,
                HUBSPOT_BODY.as_bytes(),
                "x",
                &sig,
                now_ms
            ),
            Err(SignatureError::BadTimestamp("timestamp"))
        );
    }
}

#[cfg(test)]
mod standard_webhooks_tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn published_test_vector_verifies() {
        assert_eq!(standard_webhooks(SECRET, ID, TS, BODY, SIG), Ok(()));
        check_timestamp(TS, 1614265330 + 10).unwrap();
    }

    #[test]
    fn one_of_several_signatures_is_enough() {
        let header = format!("v1,bm90IGl0 v2,abc {SIG}");
        assert_eq!(standard_webhooks(SECRET, ID, TS, BODY, &header), Ok(()));
    }

    #[test]
    fn tampering_anywhere_fails() {
        let tampered_body = br#"{"test": 2432232315}"#;
        assert_eq!(
            standard_webhooks(SECRET, ID, TS, tampered_body, SIG),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            standard_webhooks(SECRET, "msg_other", TS, BODY, SIG),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            standard_webhooks(SECRET, ID, "1614265331", BODY, SIG),
            Err(SignatureError::NoMatch)
        );
        let other_secret = "whsec_bm90IHRoZSBzZWNyZXQgYXQgYWxsISE=";
        assert_eq!(
            standard_webhooks(other_secret, ID, TS, BODY, SIG),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            standard_webhooks(SECRET, ID, TS, BODY, "v1,"),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_are_stale_both_ways() {
        let ts: i64 = TS.parse().unwrap();
        assert_eq!(
            check_timestamp(TS, ts + 301),
            Err(SignatureError::Stale("webhook-timestamp"))
        );
        assert_eq!(
            check_timestamp(TS, ts - 301),
            Err(SignatureError::Stale("webhook-timestamp"))
        );
        assert_eq!(check_timestamp(TS, ts + 300), Ok(()));
        assert_eq!(
            check_timestamp("soon", ts),
            Err(SignatureError::BadTimestamp("webhook-timestamp"))
        );
    }
}
