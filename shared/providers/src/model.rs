//! The chat model: any OpenAI-compatible `/chat/completions` endpoint, streamed. Requests use
//! async-openai's types; the HTTP and SSE are ours, because the agent needs what its client
//! hides: the `Retry-After` of a 429, a deadline per call, and telling a stream that ended
//! from one that was cut.
//!
//! One call retries on 429 (after `Retry-After`), 5xx, timeouts and dropped connections. When
//! a stream is cut after text reached the user, the retry asks the model to continue the text
//! already given (sent back as the start of its reply) and skips whatever it repeats of it,
//! so the user sees one answer, not two beginnings.

use async_openai::types::{
    ChatCompletionMessageToolCall, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage, ChatCompletionStreamOptions,
    ChatCompletionTool, ChatCompletionToolType, FunctionCall,
};
use eventsource_stream::Eventsource;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The endpoint refused the request itself (bad key, unknown model, invalid request).
    #[error("the model endpoint refused the request ({status}): {detail}")]
    Refused { status: u16, detail: String },
    /// It kept failing (429, 5xx, timeouts) through every retry.
    #[error("the model endpoint is unavailable: {0}")]
    Unavailable(String),
}

impl ModelError {
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Refused { status: 401, .. } | ModelError::Refused { status: 403, .. } => {
                "model_unauthorized"
            }
            ModelError::Refused { .. } => "model_refused",
            ModelError::Unavailable(_) => "model_unavailable",
        }
    }
}

/// The request body, OpenAI's shape.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatCompletionRequestMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ChatCompletionTool>,
    pub stream: bool,
    pub stream_options: ChatCompletionStreamOptions,
}

/// A tool call the model made, complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// As the model wrote them: JSON, one hopes.
    pub arguments: String,
}

impl ToolCall {
    pub fn to_openai(&self) -> ChatCompletionMessageToolCall {
        ChatCompletionMessageToolCall {
            id: self.id.clone(),
            r#type: ChatCompletionToolType::Function,
            function: FunctionCall {
                name: self.name.clone(),
                arguments: self.arguments.clone(),
            },
        }
    }
}

/// What one call produced.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// From the request to the first text or tool call.
    pub first_token: Option<Duration>,
    pub attempts: u32,
}

/// Lenient views of a streamed chunk: servers other than OpenAI leave fields out.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ChunkToolCall>,
}

#[derive(Debug, Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Debug, Deserialize)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Where streamed text goes as it arrives.
pub trait TextSink: Send {
    type Error: Send;
    fn text(&mut self, piece: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// For calls whose text is only wanted whole (compiling a rule, tier 2 of insights).
pub struct Discard;

impl TextSink for Discard {
    type Error = std::convert::Infallible;
    async fn text(&mut self, _piece: &str) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[derive(Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    url: String,
    key: String,
    pub model: String,
    pub provider: String,
    timeout: Duration,
    max_retries: u32,
    retry_base: Duration,
}

/// How one attempt ended.
enum Attempt {
    Finished,
    /// Worth another try, after this long.
    Retry(Duration, String),
    Refused(u16, String),
}

impl ModelClient {
    pub fn new(config: &common::Config) -> Self {
        let (base, key) = config.chat_endpoint();
        let provider = url::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .map(|host| {
                if host.ends_with("openai.com") {
                    "openai".to_owned()
                } else if host.ends_with("openai.azure.com") {
                    "azure.ai.openai".to_owned()
                } else {
                    "openai_compatible".to_owned()
                }
            })
            .unwrap_or_else(|| "openai_compatible".to_owned());
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("a TLS client builds"),
            url: format!("{base}/chat/completions"),
            key: key.to_owned(),
            model: config.chat_model.clone(),
            provider,
            timeout: Duration::from_secs(config.chat_model_timeout_secs.max(1)),
            max_retries: config.chat_max_retries,
            retry_base: Duration::from_millis(config.retry_base_ms.clamp(50, 2_000)),
        }
    }

    /// The span of one chat call, with the GenAI semantic-convention attributes (usage and
    /// finish reasons are recorded on it when the call ends).
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "chat",
            otel.name = format!("chat {}", self.model),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = %self.provider,
            gen_ai.request.model = %self.model,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
        )
    }

    pub fn request(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
        tools: Vec<ChatCompletionTool>,
    ) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages,
            tools,
            stream: true,
            stream_options: ChatCompletionStreamOptions {
                include_usage: true,
            },
        }
    }

    /// Streams one completion, giving each piece of text to `on_text` as it arrives, retrying
    /// as the module describes. Tool calls are returned whole, never half. `resume` is text of
    /// this answer the user already has (a turn picked up after a crash): the model is asked to
    /// continue it, and the completion holds only what follows.
    pub async fn complete_from<S: TextSink>(
        &self,
        request: &ChatRequest,
        resume: &str,
        sink: &mut S,
    ) -> Result<Result<Completion, ModelError>, S::Error> {
        let started = Instant::now();
        let mut out = Completion::default();
        let mut attempt_no = 0;
        loop {
            attempt_no += 1;
            out.attempts = attempt_no;
            let mut body = request.clone();
            let already = format!("{resume}{}", out.text);
            if !already.is_empty() {
                // Cut mid-answer: ask for the rest of what the user already has.
                body.messages
                    .push(ChatCompletionRequestMessage::System(
                        ChatCompletionRequestSystemMessage::from(
                            "Your previous reply was cut off. Continue it exactly where it stops, without repeating it.",
                        ),
                    ));
                body.messages.push(ChatCompletionRequestMessage::Assistant(
                    ChatCompletionRequestAssistantMessage::from(already.as_str()),
                ));
            }
            let mut tool_calls: Vec<ToolCall> = Vec::new();
            let mut fresh = String::new();
            let result = tokio::time::timeout(
                self.timeout,
                self.attempt(
                    &body,
                    &already,
                    &mut fresh,
                    &mut tool_calls,
                    &mut out,
                    started,
                    sink,
                ),
            )
            .await;
            let outcome = match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => return Err(e),
                Err(_) => Attempt::Retry(
                    self.backoff(attempt_no),
                    format!("no complete answer within {:?}", self.timeout),
                ),
            };
            out.text.push_str(&fresh);
            match outcome {
                Attempt::Finished => {
                    out.tool_calls = tool_calls;
                    return Ok(Ok(out));
                }
                Attempt::Refused(status, detail) => {
                    return Ok(Err(ModelError::Refused { status, detail }));
                }
                Attempt::Retry(wait, why) => {
                    metrics::counter!("chat_model_retries_total").increment(1);
                    if attempt_no > self.max_retries {
                        return Ok(Err(ModelError::Unavailable(why)));
                    }
                    tracing::warn!(attempt = attempt_no, wait_ms = wait.as_millis() as u64, reason = %why, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.retry_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(10)))
            .min(Duration::from_secs(30))
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt<S: TextSink>(
        &self,
        body: &ChatRequest,
        already: &str,
        fresh: &mut String,
        tool_calls: &mut Vec<ToolCall>,
        out: &mut Completion,
        started: Instant,
        sink: &mut S,
    ) -> Result<Attempt, S::Error> {
        let mut req = self.http.post(&self.url).json(body);
        if !self.key.is_empty() {
            req = req.bearer_auth(&self.key).header("api-key", &self.key);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Attempt::Retry(
                    self.backoff(out.attempts),
                    format!("request failed: {}", e.without_url()),
                ));
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let wait = retry_after(response.headers()).unwrap_or(self.backoff(out.attempts));
            // The body may echo part of the key: only its error identifiers go on.
            let detail = response.text().await.unwrap_or_default();
            return Ok(Attempt::Retry(
                wait.min(Duration::from_secs(60)),
                format!("{status}: {}", common::redact::endpoint_error(&detail)),
            ));
        }
        if !status.is_success() {
            let detail = response.text().await.unwrap_or_default();
            return Ok(Attempt::Refused(
                status.as_u16(),
                common::redact::endpoint_error(&detail),
            ));
        }
        // What the model re-sends of text the user already has is skipped.
        let mut skip = already.to_owned();
        let mut partial: Vec<ToolCall> = Vec::new();
        let mut finished = false;
        let mut events = response.bytes_stream().eventsource();
        // Text is handed on in what has arrived together: a piece waits for nothing, but
        // pieces already read by the time the last one is handed on travel as one.
        let mut batch = String::new();
        loop {
            let event = match events.next().now_or_never() {
                Some(event) => event,
                None => {
                    if !batch.is_empty() {
                        sink.text(&batch).await?;
                        fresh.push_str(&std::mem::take(&mut batch));
                    }
                    events.next().await
                }
            };
            let Some(event) = event else { break };
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    if !batch.is_empty() {
                        sink.text(&batch).await?;
                        fresh.push_str(&batch);
                    }
                    return Ok(Attempt::Retry(
                        self.backoff(out.attempts),
                        match e {
                            eventsource_stream::EventStreamError::Transport(t) => {
                                format!("stream cut: {}", t.without_url())
                            }
                            other => format!("stream cut: {other}"),
                        },
                    ));
                }
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                finished = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: Chunk = match serde_json::from_str(data) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable chunk skipped");
                    continue;
                }
            };
            if let Some(usage) = chunk.usage {
                out.input_tokens += usage.prompt_tokens;
                out.output_tokens += usage.completion_tokens;
            }
            for choice in chunk.choices {
                if let Some(mut text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    if !skip.is_empty() {
                        let common = common_prefix(&skip, &text);
                        skip.drain(..common);
                        text.drain(..common);
                        if common == 0 {
                            skip.clear();
                        }
                    }
                    if !text.is_empty() {
                        out.first_token.get_or_insert(started.elapsed());
                        batch.push_str(&text);
                    }
                }
                for call in choice.delta.tool_calls {
                    out.first_token.get_or_insert(started.elapsed());
                    while partial.len() <= call.index {
                        partial.push(ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                    }
                    let slot = &mut partial[call.index];
                    if let Some(id) = call.id.filter(|i| !i.is_empty()) {
                        slot.id = id;
                    }
                    if let Some(f) = call.function {
                        if let Some(name) = f.name {
                            slot.name.push_str(&name);
                        }
                        if let Some(args) = f.arguments {
                            slot.arguments.push_str(&args);
                        }
                    }
                }
                if choice.finish_reason.is_some() {
                    finished = true;
                }
            }
        }
        if !batch.is_empty() {
            sink.text(&batch).await?;
            fresh.push_str(&batch);
        }
        if !finished {
            return Ok(Attempt::Retry(
                self.backoff(out.attempts),
                "stream ended before the answer did".into(),
            ));
        }
        for (i, mut call) in partial.into_iter().enumerate() {
            if call.name.is_empty() {
                continue;
            }
            if call.id.is_empty() {
                call.id = format!("call_{i}");
            }
            tool_calls.push(call);
        }
        if out.output_tokens == 0 {
            // The server did not report usage: an estimate beats nothing.
            out.output_tokens = estimate_tokens(fresh)
                + tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.arguments))
                    .sum::<u64>();
            out.input_tokens =
                estimate_tokens(&serde_json::to_string(&body.messages).unwrap_or_default());
        }
        Ok(Attempt::Finished)
    }
}

/// Byte length of the longest common prefix, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map(|((i, c), _)| i + c.len_utf8())
        .unwrap_or(0)
}

/// Roughly four characters per token, the usual rule for English text.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = value.trim().parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_respects_characters() {
        assert_eq!(common_prefix("héllo", "hélp"), "hél".len());
        assert_eq!(common_prefix("abc", "xbc"), 0);
        assert_eq!(common_prefix("", "abc"), 0);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    }
}
