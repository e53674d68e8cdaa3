//! A local OpenAI-compatible chat endpoint for tests and benchmarks: `POST /chat/completions`
//! streamed as OpenAI streams it (role chunk, content or tool-call chunks, a finish chunk, a
//! usage chunk when asked, `[DONE]`), and its failures: 429 with `Retry-After`, 5xx, a stream
//! cut mid-way, slow tokens. What it answers is decided per request by a responder, or by a
//! script consumed in order.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One answer of the fake.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Text streamed in these pieces.
    Text(Vec<String>),
    /// Tool calls: `(name, arguments as JSON)`.
    Tools(Vec<(String, Value)>),
    /// An HTTP error, with `Retry-After` seconds if given.
    Status(u16, Option<u64>),
    /// These pieces, then the connection dies before the answer ends.
    Cut(Vec<String>),
}

impl Reply {
    /// Text split into pieces of about `size` characters.
    pub fn text(text: &str, size: usize) -> Self {
        let chars: Vec<char> = text.chars().collect();
        Reply::Text(
            chars
                .chunks(size.max(1))
                .map(|c| c.iter().collect())
                .collect(),
        )
    }

    pub fn tool(name: &str, arguments: Value) -> Self {
        Reply::Tools(vec![(name.to_owned(), arguments)])
    }
}

type Responder = Box<dyn Fn(&Value) -> Reply + Send + Sync>;

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub at: Instant,
    pub authorization: Option<String>,
}

struct Inner {
    script: Mutex<VecDeque<Reply>>,
    responder: Option<Responder>,
    received: Mutex<Vec<Received>>,
    piece_delay: Mutex<Duration>,
}

#[derive(Clone)]
pub struct FakeModel {
    pub url: String,
    inner: Arc<Inner>,
}

impl FakeModel {
    /// Answers each request with the next reply of `script` (then "OK.").
    pub async fn scripted(script: Vec<Reply>) -> Self {
        Self::start(script, None).await
    }

    /// Answers each request with what `responder` makes of its body.
    pub async fn responding(responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(Vec::new(), Some(Box::new(responder))).await
    }

    async fn start(script: Vec<Reply>, responder: Option<Responder>) -> Self {
        let inner = Arc::new(Inner {
            script: Mutex::new(script.into()),
            responder,
            received: Mutex::new(Vec::new()),
            piece_delay: Mutex::new(Duration::ZERO),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        // As a real endpoint would, write each streamed piece at once (no Nagle delay).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// Waits this long before each streamed piece (a slow model).
    pub fn set_piece_delay(&self, delay: Duration) {
        *self.inner.piece_delay.lock().unwrap() = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }
}

/// The last message of a request.
pub fn last_message(body: &Value) -> &Value {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .unwrap_or(&Value::Null)
}

/// When the request is the insights pipeline's tier 2, an answer as a model would give it:
/// the message's first sentence as one feature request, quoted word for word.
pub fn tier2_reply(body: &Value) -> Option<Reply> {
    tier2_reply_picking(body, |sentences| sentences.first().copied())
}

/// When the request is the insights pipeline's tier 2: the message's sentence `pick` chooses
/// as one feature request, quoted word for word (no item when it chooses none).
pub fn tier2_reply_picking(
    body: &Value,
    pick: impl for<'a> Fn(&[&'a str]) -> Option<&'a str>,
) -> Option<Reply> {
    let system = body["messages"][0]["content"].as_str()?;
    if !system.contains("list the product feedback") {
        return None;
    }
    let user = body["messages"][1]["content"].as_str()?;
    let text = user.split("\"\"\"\n").nth(1)?.trim_end_matches("\n\"\"\"");
    let sentences: Vec<&str> = text
        .split_inclusive(['.', '?', '!', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let items = match pick(&sentences) {
        Some(quote) => {
            let title: String = quote
                .split_whitespace()
                .take(6)
                .collect::<Vec<_>>()
                .join(" ");
            json!([{"kind": "feature_request", "title": title, "quote": quote}])
        }
        None => json!([]),
    };
    Some(Reply::text(&json!({ "items": items }).to_string(), 30))
}

/// When the request is the insights pipeline's tier 1 with a model, its numbered messages.
pub fn tier1_messages(body: &Value) -> Option<Vec<(u64, String)>> {
    let system = body["messages"][0]["content"].as_str()?;
    if !system.contains("rate each from 0 to 10") {
        return None;
    }
    let user = body["messages"][1]["content"].as_str()?;
    Some(
        user.split("\n[")
            .skip(1)
            .filter_map(|part| {
                let (n, rest) = part.split_once("]\n\"\"\"\n")?;
                let text = rest.split("\n\"\"\"").next()?;
                Some((n.parse().ok()?, text.to_owned()))
            })
            .collect(),
    )
}

/// When the request is tier 1's, the scores `judge` gives each message, as a model answers.
pub fn tier1_reply(body: &Value, judge: impl Fn(&str) -> u8) -> Option<Reply> {
    let scores: Vec<Value> = tier1_messages(body)?
        .iter()
        .map(|(id, text)| json!({"id": id, "score": judge(text)}))
        .collect();
    Some(Reply::text(&json!({ "scores": scores }).to_string(), 10))
}

/// The tool results in a request, parsed, newest last.
pub fn tool_results(body: &Value) -> Vec<Value> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "tool")
                .filter_map(|m| serde_json::from_str(m["content"].as_str()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn chunk(delta: Value, finish: Option<&str>) -> Bytes {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {body}\n\n"))
}

fn usage_chunk(input: u64, output: u64) -> Bytes {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model",
        "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    });
    Bytes::from(format!("data: {body}\n\n"))
}

async fn completions(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
    };
    inner.received.lock().unwrap().push(Received {
        body: body.clone(),
        at: Instant::now(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let reply = match &inner.responder {
        Some(r) => r(&body),
        None => inner
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Reply::text("OK.", 10)),
    };
    let input = (body["messages"].to_string().len() / 4) as u64;
    let delay = *inner.piece_delay.lock().unwrap();
    let (pieces, cut): (Vec<Bytes>, bool) = match reply {
        Reply::Status(code, retry_after) => {
            // As OpenAI answers: a refused key is echoed in part in the message.
            let error = if code == 401 {
                let key = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("sk-none");
                let shown: String = key.chars().take(8).collect();
                let tail: String = key
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                json!({"message": format!("Incorrect API key provided: {shown}***{tail}. You can find your API key at https://platform.example/account/api-keys."),
                       "type": "invalid_request_error", "param": null, "code": "invalid_api_key"})
            } else {
                json!({"message": "fake failure", "type": "server_error"})
            };
            let mut response = (
                StatusCode::from_u16(code).unwrap(),
                axum::Json(json!({ "error": error })),
            )
                .into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            return response;
        }
        Reply::Text(texts) => {
            let output: usize = texts.iter().map(|t| t.len()).sum();
            let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            out.extend(texts.iter().map(|t| chunk(json!({"content": t}), None)));
            out.push(chunk(json!({}), Some("stop")));
            out.push(usage_chunk(input, (output / 4) as u64 + 1));
            (out, false)
        }
        Reply::Cut(texts) => {
            let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            out.extend(texts.iter().map(|t| chunk(json!({"content": t}), None)));
            (out, true)
        }
        Reply::Tools(calls) => {
            let mut out = vec![chunk(json!({"role": "assistant", "content": null}), None)];
            for (i, (name, args)) in calls.iter().enumerate() {
                let args = args.to_string();
                let (a, b) = args.split_at(args.len() / 2);
                out.push(chunk(
                    json!({"tool_calls": [{"index": i, "id": format!("call_{}", uuid::Uuid::new_v4().simple()), "type": "function", "function": {"name": name, "arguments": a}}]}),
                    None,
                ));
                out.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]}),
                    None,
                ));
            }
            out.push(chunk(json!({}), Some("tool_calls")));
            out.push(usage_chunk(input, 20));
            (out, false)
        }
    };
    let stream = async_stream(
        pieces,
        cut,
        delay,
        body["stream_options"]["include_usage"] == true,
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    pieces: Vec<Bytes>,
    cut: bool,
    delay: Duration,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(
        (pieces.into_iter(), false),
        move |(mut pieces, ended)| async move {
            if ended {
                return None;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            loop {
                match pieces.next() {
                    Some(p) if !include_usage && p.windows(8).any(|w| w == b"\"usage\":") => {
                        continue;
                    }
                    Some(p) => return Some((Ok(p), (pieces, false))),
                    None if cut => {
                        // Let what was sent reach the client before the connection dies.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Some((
                            Err(std::io::Error::other("connection cut")),
                            (pieces, true),
                        ));
                    }
                    None => {
                        return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (pieces, true)));
                    }
                }
            }
        },
    )
}
