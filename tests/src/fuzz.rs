//! `make fuzz`: generated inputs against every parser and checker that reads what outsiders
//! send, on the stable toolchain. Each target mutates a kept corpus of inputs (splicing,
//! repeating, inserting the target's own tokens, control characters and text beyond ASCII),
//! runs the code under test and checks its properties (a printed rule parses back to itself,
//! a correct signature verifies and a changed one does not, a shown address reads back to the
//! same address, no text adds an email header). A panic is a failure: its input is kept in
//! `tests/fuzz/crashes/<target>/`. An input whose outcome was not seen before (a new error, a
//! new shape) joins `tests/fuzz/corpus/<target>/`, so later runs start from what earlier ones
//! found.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::Sha256;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What running one input gave: an outcome class (for the corpus), or a broken property.
pub type Outcome = Result<String, String>;

pub struct Target {
    pub name: &'static str,
    /// Words the mutator inserts: the language's own tokens and known troublemakers.
    pub tokens: &'static [&'static str],
    /// Inputs to start from when the corpus folder is empty.
    pub seeds: &'static [&'static str],
    pub run: fn(&str) -> Outcome,
}

/// How a run of one target went.
#[derive(Debug)]
pub struct Summary {
    pub target: &'static str,
    pub inputs: u64,
    pub panics: u64,
    pub broken: u64,
    pub classes: usize,
    pub corpus: usize,
    pub added: usize,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {:<18} {:>9} inputs  {} panics  {} broken properties  {:>4} outcome classes  corpus {} (+{})  {:.1} s",
            self.target,
            self.inputs,
            self.panics,
            self.broken,
            self.classes,
            self.corpus,
            self.added,
            self.seconds
        )
    }
}

const TROUBLE: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    "\t",
    "\u{0}",
    "\u{7f}",
    "\u{200b}",
    "\u{feff}",
    "é",
    "💥",
    "\\",
    "\"",
    "'",
    "%",
    "%0d%0a",
    "{{",
    "}}",
    "((((((((((((((((",
    "[[[[[[[[[[",
    "99999999999999999999",
    "-1",
    "0",
    "",
];

fn mutate(rng: &mut StdRng, input: &str, corpus: &[String], tokens: &[&str]) -> String {
    let mut s: Vec<char> = input.chars().collect();
    for _ in 0..rng.gen_range(1..=4) {
        let at = if s.is_empty() {
            0
        } else {
            rng.gen_range(0..=s.len())
        };
        match rng.gen_range(0..8) {
            0 | 1 => {
                let pool = if rng.gen_bool(0.7) { tokens } else { TROUBLE };
                let t = pool[rng.gen_range(0..pool.len())];
                s.splice(at..at, t.chars());
            }
            2 if !s.is_empty() => {
                let end = (at + rng.gen_range(1..=8)).min(s.len());
                s.drain(at.min(end)..end);
            }
            3 if !s.is_empty() => {
                let end = (at + rng.gen_range(1..=16)).min(s.len());
                let piece: Vec<char> = s[at.min(end)..end].to_vec();
                let most = if rng.gen_bool(0.1) { 300 } else { 4 };
                let times = rng.gen_range(1..=most);
                for _ in 0..times {
                    s.splice(at..at, piece.iter().copied());
                }
            }
            4 if !s.is_empty() => {
                let i = rng.gen_range(0..s.len());
                s[i] = match rng.gen_range(0..3) {
                    0 => char::from(rng.gen_range(0u8..0x80)),
                    1 => char::from_u32(rng.gen_range(0x80..0x3000)).unwrap_or('?'),
                    _ => char::from(rng.gen_range(0u8..0x20)),
                };
            }
            5 if !corpus.is_empty() => {
                let other: Vec<char> = corpus[rng.gen_range(0..corpus.len())].chars().collect();
                let from = rng.gen_range(0..=other.len());
                s.truncate(at);
                s.extend_from_slice(&other[from..]);
            }
            6 => {
                let t = tokens[rng.gen_range(0..tokens.len())];
                let times = rng.gen_range(1..=200);
                let repeated = t.repeat(times);
                s.splice(at..at, repeated.chars());
            }
            _ => {
                let t = tokens[rng.gen_range(0..tokens.len())];
                s.splice(at..at, t.chars());
            }
        }
        // Inputs stay at most what the API would take.
        s.truncate(8_000);
    }
    s.into_iter().collect()
}

fn file_name(input: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(input.as_bytes())[..8])
}

fn read_corpus(dir: &Path) -> Vec<String> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.path(), std::fs::read_to_string(e.path()).ok()?)))
        .collect();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

/// Inputs a run adds to a target's corpus at most, and the corpus's size at most.
const NEW_PER_RUN: usize = 40;
const MAX_CORPUS: usize = 300;

/// Runs `target` on `inputs` generated inputs, keeping what it finds under `root`
/// (`tests/fuzz`); `None` keeps nothing (the suite's quick run).
pub fn run(target: &Target, inputs: u64, seed: u64, root: Option<&Path>) -> Summary {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed ^ target.name.len() as u64);
    let corpus_dir = root.map(|r| r.join("corpus").join(target.name));
    let crash_dir = root.map(|r| r.join("crashes").join(target.name));
    let mut corpus = corpus_dir.as_deref().map(read_corpus).unwrap_or_default();
    if corpus.is_empty() {
        corpus = target.seeds.iter().map(|s| (*s).to_owned()).collect();
    }
    let mut classes: HashSet<String> = HashSet::new();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for known in corpus.clone() {
        if let Ok(Ok(class)) = catch_unwind(AssertUnwindSafe(|| (target.run)(&known))) {
            classes.insert(class);
        }
    }
    let before = corpus.len();
    let (mut panics, mut broken) = (0, 0);
    let keep = |dir: &Option<PathBuf>, input: &str| {
        if let Some(dir) = dir {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join(file_name(input)), input);
        }
    };
    for _ in 0..inputs {
        let base = &corpus[rng.gen_range(0..corpus.len())];
        let input = mutate(&mut rng, base, &corpus, target.tokens);
        match catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            Ok(Ok(class)) => {
                // A new outcome joins the corpus (a few a run, short ones, so the kept corpus
                // stays small enough to keep in the repository).
                if classes.insert(class)
                    && corpus.len() - before < NEW_PER_RUN
                    && corpus.len() < MAX_CORPUS
                    && input.len() <= 2_000
                {
                    keep(&corpus_dir, &input);
                    corpus.push(input);
                }
            }
            Ok(Err(property)) => {
                broken += 1;
                if broken <= 20 {
                    eprintln!("fuzz {}: {property}\n  input: {input:?}", target.name);
                    keep(&crash_dir, &input);
                }
            }
            Err(_) => {
                panics += 1;
                if panics <= 20 {
                    eprintln!("fuzz {}: panic on {input:?}", target.name);
                    keep(&crash_dir, &input);
                }
            }
        }
    }
    std::panic::set_hook(quiet);
    Summary {
        target: target.name,
        inputs,
        panics,
        broken,
        classes: classes.len(),
        corpus: corpus.len(),
        added: corpus.len() - before,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// An outcome class of an error: its text with digits and quoted parts folded, so one kind of
/// error at many places is one class.
fn class_of(prefix: &str, error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut quoted = false;
    // serde's position ("at line 1 column 5") and anything past the first words say little.
    let error = error.split(" at line ").next().unwrap_or(error);
    for c in error.chars().take(48) {
        match c {
            '`' | '"' => {
                quoted = !quoted;
                out.push('`');
            }
            _ if quoted => {}
            c if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            c => out.push(c),
        }
    }
    format!("{prefix}: {out}")
}

fn rule_parser(input: &str) -> Outcome {
    let steps = rules::parse_steps(input);
    match rules::parse_rule(input) {
        Ok(rule) => {
            let printed = rule.to_string();
            let again = rules::parse_rule(&printed).map_err(|e| {
                format!("the printed rule does not parse: {e}\n  printed: {printed}")
            })?;
            if again != rule {
                return Err(format!(
                    "printed and parsed again, the rule changed: {printed}"
                ));
            }
            let stored = serde_json::to_value(&rule).map_err(|e| e.to_string())?;
            let back: rules::Rule = serde_json::from_value(stored)
                .map_err(|e| format!("the stored rule does not read back: {e}"))?;
            if back != rule {
                return Err("the stored rule reads back changed".into());
            }
            if let Some(condition) = &rule.condition {
                let event = rules::view::build(
                    "gmail",
                    "email.received",
                    "m1",
                    "2026-12-01T00:00:00Z",
                    &serde_json::json!({"from": "Sara <sara@client.example>", "subject": "Hi", "labels": ["INBOX"]}),
                );
                let _ = rules::evaluate(condition, &event, &Default::default());
            }
            Ok(format!("ok {} steps", rule.steps.len().min(4)))
        }
        Err(e) => Ok(class_of(
            if steps.is_ok() {
                "steps ok, rule"
            } else {
                "rule"
            },
            &e.expected,
        )),
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hmac_b64(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn webhook_signatures(input: &str) -> Outcome {
    use gateway::signatures as sig;
    // The input is split into what a request carries: id, timestamp, body, signature.
    let mut parts = input.splitn(4, '|');
    let (id, ts, body, given) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let now = 1_764_000_000;
    let mut class = Vec::new();
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("the test secret is base64");
    class.push(format!(
        "{:?}",
        sig::standard_webhooks(SECRET, id, ts, body.as_bytes(), given).is_ok()
    ));
    // Property: the right signature verifies, and the same with a changed body does not.
    let right = format!(
        "v1,{}",
        hmac_b64(
            &key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]
        )
    );
    if sig::standard_webhooks(SECRET, id, ts, body.as_bytes(), &format!("{given} {right}")).is_err()
    {
        return Err("a correct Standard Webhooks signature was refused".into());
    }
    let changed = format!("{body}x");
    if sig::standard_webhooks(SECRET, id, ts, changed.as_bytes(), &right).is_ok() {
        return Err("a signature verified a changed body".into());
    }
    class.push(format!(
        "{:?}",
        sig::check_timestamp(ts, now).map_err(|e| e
            .to_string()
            .chars()
            .take(20)
            .collect::<String>())
    ));
    let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    class.push(format!(
        "{:?}",
        sig::hubspot_v1(secret, body.as_bytes(), given).is_ok()
    ));
    class.push(format!(
        "{:?}",
        sig::hubspot_v2(secret, "POST", id, body.as_bytes(), given).is_ok()
    ));
    let v3 = sig::hubspot_v3(secret, "POST", id, body.as_bytes(), ts, given, now * 1000);
    class.push(format!(
        "{:?}",
        v3.map_err(|e| e.to_string().chars().take(20).collect::<String>())
    ));
    let uri = sig::hubspot_v3_uri(id);
    if uri.len() > id.len() {
        return Err("decoding the v3 URI made it longer".into());
    }
    let signed_v3 = hmac_b64(
        secret.as_bytes(),
        &[
            b"POST",
            uri.as_bytes(),
            body.as_bytes(),
            ts.trim().as_bytes(),
        ],
    );
    if sig::check_window(ts, now * 1000, 1000).is_ok()
        && sig::hubspot_v3(
            secret,
            "POST",
            id,
            body.as_bytes(),
            ts,
            &signed_v3,
            now * 1000,
        )
        .is_err()
    {
        return Err("a correct HubSpot v3 signature was refused".into());
    }
    class.push(format!(
        "{:?}",
        sig::slack(
            "8f742231b10e8888abcd99yyyzzz85a5",
            ts,
            body.as_bytes(),
            given,
            now
        )
        .is_ok()
    ));
    Ok(class.join(" "))
}

fn webhook_payloads(input: &str) -> Outcome {
    use gateway::payloads;
    let bytes = input.as_bytes();
    let h = payloads::hubspot(bytes).map(|c| c.len().min(3));
    let s = payloads::slack(bytes).map(|r| match r {
        payloads::SlackRequest::UrlVerification(_) => "verify",
        payloads::SlackRequest::Event { .. } => "event",
        payloads::SlackRequest::Other => "other",
    });
    let g = payloads::gmail_push(bytes).map(|_| "push");
    Ok(format!(
        "{} | {} | {}",
        h.map(|n| n.to_string())
            .unwrap_or_else(|e| class_of("", &e)),
        s.map(str::to_owned).unwrap_or_else(|e| class_of("", &e)),
        g.map(str::to_owned).unwrap_or_else(|e| class_of("", &e)),
    ))
}

fn push_verifier() -> &'static (tokio::runtime::Runtime, gateway::google_jwt::PushVerifier) {
    static V: std::sync::OnceLock<(tokio::runtime::Runtime, gateway::google_jwt::PushVerifier)> =
        std::sync::OnceLock::new();
    V.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let jwks = include_str!("../data/push_signer.jwks.json");
        let config = common::Config {
            google_jwks: jwks.into(),
            gmail_push_service_account: "push@project.iam.gserviceaccount.com".into(),
            public_url: "https://assistant.example".into(),
            ..Default::default()
        };
        let verifier = gateway::google_jwt::PushVerifier::new(&config, reqwest::Client::new())
            .expect("the test key set reads");
        (runtime, verifier)
    })
}

fn push_token(input: &str) -> Outcome {
    let (runtime, verifier) = push_verifier();
    let result = runtime.block_on(verifier.verify(Some(&format!("Bearer {input}"))));
    match result {
        Ok(()) => Err(format!(
            "an unsigned or forged push token was accepted: {input}"
        )),
        Err(e) => Ok(class_of("refused", &e.to_string())),
    }
}

fn admission(input: &str) -> Outcome {
    use common::ids::Source;
    let mut parts = input.splitn(5, '|');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    let (source, kind, external_id, title, body) = (next(), next(), next(), next(), next());
    let (source, kind) = match (Source::parse(&source), Source::parse(&kind)) {
        (Ok(s), Ok(k)) => (s, k),
        (Err(e), _) | (_, Err(e)) => return Ok(class_of("source", &e)),
    };
    let metadata = serde_json::from_str(&body).unwrap_or(serde_json::json!({"raw": body}));
    let doc = common::events::DocumentInput {
        source,
        kind,
        external_id,
        title,
        body,
        metadata,
        occurred_at: None,
    };
    let limits = common::intake::Limits {
        max_batch: 100,
        max_body_bytes: 4_096,
    };
    match common::intake::admit(doc, "documents[0]", &limits) {
        Ok(admitted) => {
            // What is admitted is what the database can hold.
            for (field, text) in [
                ("title", &admitted.title),
                ("body", &admitted.body),
                ("external_id", &admitted.external_id),
            ] {
                if text.contains('\u{0}') {
                    return Err(format!("admitted {field} holds a NUL byte"));
                }
            }
            if admitted.body.len() > limits.max_body_bytes {
                return Err("admitted a body over the limit".into());
            }
            // Admitting what was admitted changes nothing.
            let again = common::intake::admit(admitted.clone(), "documents[0]", &limits)
                .map_err(|e| format!("an admitted document was refused the second time: {e:?}"))?;
            if (
                &again.title,
                &again.body,
                &again.external_id,
                &again.metadata,
            ) != (
                &admitted.title,
                &admitted.body,
                &admitted.external_id,
                &admitted.metadata,
            ) {
                return Err("admitting an admitted document changed it".into());
            }
            Ok("admitted".into())
        }
        Err(e) => Ok(class_of(&e.field, &e.reason)),
    }
}

fn addresses(input: &str) -> Outcome {
    use common::email;
    let one = email::mailbox(input);
    if let Ok(m) = &one {
        let shown = email::display(m);
        let back = email::mailbox(&shown).map_err(|e| {
            format!("the shown address does not read back: {e}\n  shown: {shown:?}")
        })?;
        // Shown (and sent) in lower case, as mail systems compare them.
        if back.email.to_string().to_lowercase() != m.email.to_string().to_lowercase() {
            return Err(format!(
                "the shown address reads back as another: {shown:?}"
            ));
        }
        if shown.chars().any(char::is_control) {
            return Err("a shown address holds a control character".into());
        }
    }
    let list = email::mailboxes(&serde_json::Value::String(input.to_owned()));
    let _ = email::sender_verified(
        input,
        &[format!("mx.google.com; dmarc=pass header.from={input}")],
    );
    // Property: a message built from any subject, body and parsed recipient carries no header
    // the arguments did not name.
    if let Ok(recipients) = &list
        && !recipients.is_empty()
    {
        let args = serde_json::json!({
            "to": recipients.iter().map(email::display).collect::<Vec<_>>(),
            "subject": input, "body": input,
        });
        if let Ok(prepared) = tool_executor::writes::prepare("send_email", &args)
            && let Ok(raw) =
                tool_executor::mime::message("dana@harborwealth.example", &prepared, "<a@b>")
        {
            let text = String::from_utf8_lossy(&raw);
            let head = text.split("\r\n\r\n").next().unwrap_or_default();
            if head
                .split("\r\n")
                .any(|h| h.to_ascii_lowercase().starts_with("bcc"))
            {
                return Err(format!("a Bcc header appeared: {head}"));
            }
        }
    }
    Ok(format!(
        "{} {}",
        match one {
            Ok(_) => "one".to_owned(),
            Err(e) => e.problem.to_owned(),
        },
        match list {
            Ok(l) => format!("list {}", l.len().min(3)),
            Err(e) => e.problem.to_owned(),
        }
    ))
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "rule_parser",
        tokens: &[
            "when ",
            "if ",
            " then ",
            " and ",
            " or ",
            "not ",
            "(",
            ")",
            "[",
            "]",
            ",",
            ";",
            "\"",
            "==",
            "!=",
            " contains ",
            " matches ",
            " in ",
            "gmail.email.received",
            "*",
            ".",
            "contact_exists(",
            "is_client(",
            "from",
            "subject",
            "log",
            "notify text=",
            "create_note contact=",
            "ask_assistant text=",
            "wait for reply within 3d",
            " else ",
            "{{event.from}}",
            "{{ reply.snippet }}",
            "{{steps.1.id}}",
            "3d",
            "\\",
            "\"(a|b)*\"",
            "true",
            "false",
            "-1.5",
        ],
        seeds: &[
            "when hubspot.contact.created then create_task type=welcome_email priority=high",
            "when gmail.email.received if from_domain != \"harborwealth.example\" and not contact_exists(from) then create_contact email={{event.from}}",
            "when gmail.*, slack.message.posted if subject matches \"^re:\" or labels contains \"IMPORTANT\" then notify text=\"{{event.subject}}\"",
            "when * if (a or b) and not [1, 2] in c then wait for reply if from_email in [\"a@b\"] within 2h else log; ask_assistant text=\"decide\"",
        ],
        run: rule_parser,
    },
    Target {
        name: "webhook_signatures",
        tokens: &[
            "|",
            "v1,",
            " ",
            "1764000000",
            "1764000000000",
            "=",
            "v0=",
            "%3A",
            "%2F",
            "%",
            "https://x.example/api/webhooks/hubspot?a=%2F",
        ],
        seeds: &[
            "msg_1|1764000000|{\"type\":\"x\"}|v1,abc=",
            "https://assistant.example/api/webhooks/hubspot|1764000000000|[{\"eventId\":1}]|sig",
            "id|1764000000|token=x&team_id=T1|v0=00",
        ],
        run: webhook_signatures,
    },
    Target {
        name: "webhook_payloads",
        tokens: &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"type\"",
            "\"event_callback\"",
            "\"url_verification\"",
            "\"challenge\"",
            "\"team_id\"",
            "\"event_id\"",
            "\"event\"",
            "\"subscriptionType\"",
            "\"contact.creation\"",
            "\"portalId\"",
            "\"objectId\"",
            "\"eventId\"",
            "\"message\"",
            "\"data\"",
            "\"messageId\"",
            "null",
            "1e999",
            "\"\\u0000\"",
        ],
        seeds: &[
            "[{\"eventId\":1,\"portalId\":62515,\"subscriptionType\":\"contact.creation\",\"objectId\":123}]",
            "{\"type\":\"event_callback\",\"team_id\":\"T1\",\"event_id\":\"Ev1\",\"event\":{\"type\":\"message\",\"text\":\"hi\"}}",
            "{\"type\":\"url_verification\",\"challenge\":\"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P\"}",
            "{\"message\":{\"data\":\"eyJlbWFpbEFkZHJlc3MiOiJ1c2VyQGV4YW1wbGUuY29tIiwiaGlzdG9yeUlkIjoiOTg3NiJ9\",\"messageId\":\"2070443601311540\"}}",
        ],
        run: webhook_payloads,
    },
    Target {
        name: "push_token",
        tokens: &[
            ".",
            "eyJ",
            "alg",
            "none",
            "RS256",
            "HS256",
            "kid",
            "=",
            "-",
            "_",
            "eyJhbGciOiJub25lIn0",
        ],
        seeds: &[
            "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3Qta2V5In0.eyJpc3MiOiJodHRwczovL2FjY291bnRzLmdvb2dsZS5jb20iLCJhdWQiOiJ4In0.c2ln",
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2FjY291bnRzLmdvb2dsZS5jb20ifQ.",
            "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        ],
        run: push_token,
    },
    Target {
        name: "admission",
        tokens: &[
            "|",
            "gmail",
            "email",
            "notes",
            "note",
            "\u{0}",
            "\u{1b}[31m",
            "{\"a\":",
            "}",
            "\u{fffd}",
            " ",
            "x",
        ],
        seeds: &[
            "gmail|email|m-1|Portfolio review|Let's meet on Tuesday.",
            "notes|note|n1|Import|{\"nested\": {\"deep\": [1, 2, {\"x\": \"\\u0000\"}]}}",
            "hubspot|contact|contact:101|Sara Smith|Email: sara@client.example",
        ],
        run: admission,
    },
    Target {
        name: "addresses",
        tokens: &[
            "@",
            "<",
            ">",
            ",",
            "\"",
            "\\",
            " ",
            "sara@client.example",
            "Lee, Sara",
            "\r\nBcc: eve@evil.example",
            "(comment)",
            "[127.0.0.1]",
            ".",
            "=?utf-8?b?",
            "?=",
            ";",
        ],
        seeds: &[
            "sara@client.example",
            "\"Lee, Sara\" <sara@client.example>",
            "Sara Lee <sara@client.example>, ops@harborwealth.example",
            "sara@client.example\r\nBcc: eve@evil.example",
        ],
        run: addresses,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite's quick run: every target for a few thousand inputs, no panic and no broken
    /// property. `make fuzz` runs a million each.
    #[test]
    fn every_target_holds_on_a_quick_run() {
        for target in TARGETS {
            let summary = run(target, 2_000, 7, None);
            assert_eq!(summary.panics, 0, "{summary}");
            assert_eq!(summary.broken, 0, "{summary}");
            assert!(summary.classes > 1, "{summary}");
        }
    }
}
