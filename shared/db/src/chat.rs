//! Conversations, their turns and messages, and what each model call cost. A turn is one user
//! message and the work that answers it; a retried request with the same idempotency key
//! finds the same turn instead of starting another.

use crate::{DbError, Result};
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, TransactionTrait,
    Value,
};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Conversation {
    pub id: Uuid,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Turn {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub message: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    pub cancel_requested: bool,
    pub final_text: Option<String>,
    pub citations: serde_json::Value,
    pub usage: serde_json::Value,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The task whose step asked the assistant to decide (a rule's tier 2), if any.
    pub task_id: Option<Uuid>,
}

impl Turn {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed" | "cancelled")
    }

    /// A finished turn's last event, from what is stored.
    pub fn ending(&self) -> common::chat::TurnEventBody {
        use common::chat::{Finished, TurnEventBody};
        match self.status.as_str() {
            "done" => TurnEventBody::Done(Finished {
                text: self.final_text.clone().unwrap_or_default(),
                citations: serde_json::from_value(self.citations.clone()).unwrap_or_default(),
                usage: serde_json::from_value(self.usage.clone()).unwrap_or_default(),
                status: "done".into(),
            }),
            _ => TurnEventBody::Error {
                code: self
                    .error_code
                    .clone()
                    .unwrap_or_else(|| self.status.clone()),
                message: self.error_message.clone().unwrap_or_default(),
            },
        }
    }
}

/// One stored message, as the model sees the conversation.
#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Message {
    pub id: i64,
    pub turn_id: Uuid,
    pub step: i32,
    /// `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    /// For an assistant message that calls tools: `[{id, name, arguments}]`.
    pub tool_calls: Option<serde_json::Value>,
    /// For a tool result: the call it answers.
    pub tool_call_id: Option<String>,
    pub citations: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// What a request to start a turn found.
#[derive(Debug)]
pub enum Started {
    /// A new turn, stored with its user message.
    New(Turn),
    /// The turn this idempotency key already started.
    Existing(Turn),
    /// The key was used before for a different message.
    KeyReused,
    /// The conversation is a task's (a rule's tier-2 turns): it takes no user turns, so that
    /// nothing the user writes there is mixed with what the task read.
    TaskConversation,
}

const TURN_COLUMNS: &str = "id, conversation_id, user_id, message, status, cancel_requested, final_text, \
     citations, usage, error_code, error_message, created_at, finished_at, task_id";

fn title_of(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut title: String = line.trim().chars().take(80).collect();
    if line.trim().chars().count() > 80 {
        title.push('…');
    }
    title
}

pub async fn turn_by_key(
    db: &impl ConnectionTrait,
    user: UserId,
    key: &str,
) -> Result<Option<Turn>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "SELECT {TURN_COLUMNS} FROM turns WHERE user_id = $1 AND idempotency_key = $2"
            ),
            vec![user.0.into(), key.into()],
        ))
        .await?;
    Ok(row.map(|r| Turn::from_query_result(&r, "")).transpose()?)
}

/// Starts a turn in `conversation` (a new conversation when `None`), or finds the one this
/// idempotency key started. `NotFound` when the conversation is not the user's.
pub async fn start_turn(
    db: &DatabaseConnection,
    user: UserId,
    conversation: Option<Uuid>,
    idempotency_key: Option<&str>,
    message: &str,
) -> Result<Started> {
    if let Some(key) = idempotency_key
        && let Some(turn) = turn_by_key(db, user, key).await?
    {
        return Ok(if turn.message == message {
            Started::Existing(turn)
        } else {
            Started::KeyReused
        });
    }
    let txn = db.begin().await?;
    let conversation_id = match conversation {
        Some(id) => {
            let mine = txn
                .query_one_raw(stmt(
                    "UPDATE conversations SET updated_at = now()
                     WHERE id = $1 AND user_id = $2 AND origin = 'chat' RETURNING id",
                    vec![id.into(), user.0.into()],
                ))
                .await?;
            if mine.is_none() {
                let task = txn
                    .query_one_raw(stmt(
                        "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2 AND origin = 'task'",
                        vec![id.into(), user.0.into()],
                    ))
                    .await?;
                txn.rollback().await?;
                return match task {
                    Some(_) => Ok(Started::TaskConversation),
                    None => Err(DbError::NotFound),
                };
            }
            id
        }
        None => {
            let id = Uuid::new_v4();
            txn.execute_raw(stmt(
                "INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, $3)",
                vec![id.into(), user.0.into(), title_of(message).into()],
            ))
            .await?;
            id
        }
    };
    let id = Uuid::new_v4();
    let row = txn
        .query_one_raw(stmt(
            &format!(
                "INSERT INTO turns (id, conversation_id, user_id, idempotency_key, message)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id, idempotency_key) DO NOTHING
                 RETURNING {TURN_COLUMNS}"
            ),
            vec![
                id.into(),
                conversation_id.into(),
                user.0.into(),
                idempotency_key.map(str::to_owned).into(),
                message.into(),
            ],
        ))
        .await?;
    let Some(row) = row else {
        // The same key, started by a concurrent request an instant ago.
        txn.rollback().await?;
        let key = idempotency_key.unwrap_or_default();
        return match turn_by_key(db, user, key).await? {
            Some(turn) if turn.message == message => Ok(Started::Existing(turn)),
            Some(_) => Ok(Started::KeyReused),
            None => Err(DbError::NotFound),
        };
    };
    let turn = Turn::from_query_result(&row, "")?;
    txn.execute_raw(stmt(
        "INSERT INTO messages (conversation_id, turn_id, step, role, content) VALUES ($1, $2, 0, 'user', $3)",
        vec![conversation_id.into(), id.into(), message.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(Started::New(turn))
}

/// A turn a task step asks the agent to take (a rule's tier 2): its own conversation (the
/// task's), the instruction as the user's message, and what happened (the event, the reply,
/// earlier results) as the result of a `read_event` call, so it reaches the model as quoted
/// data like any tool result, never as the user's words. Created once per id.
#[allow(clippy::too_many_arguments)]
pub async fn start_task_turn(
    db: &DatabaseConnection,
    user: UserId,
    conversation: Uuid,
    title: &str,
    turn: Uuid,
    task: Uuid,
    instruction: &str,
    data: &serde_json::Value,
) -> Result<Turn> {
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "INSERT INTO conversations (id, user_id, title, origin) VALUES ($1, $2, $3, 'task')
         ON CONFLICT (id) DO NOTHING",
        vec![conversation.into(), user.0.into(), title_of(title).into()],
    ))
    .await?;
    let created = txn
        .execute_raw(stmt(
            "INSERT INTO turns (id, conversation_id, user_id, message, task_id)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            vec![
                turn.into(),
                conversation.into(),
                user.0.into(),
                instruction.into(),
                task.into(),
            ],
        ))
        .await?;
    if created.rows_affected() > 0 {
        let call = serde_json::json!([{"id": "event", "name": "read_event", "arguments": "{}"}]);
        for (step, role, content, calls, call_id) in [
            (0, "user", instruction.to_owned(), None, None),
            (1, "assistant", String::new(), Some(call), None),
            (2, "tool", data.to_string(), None, Some("event")),
        ] {
            record_message(
                &txn,
                conversation,
                turn,
                step,
                role,
                &content,
                calls,
                call_id,
                &serde_json::json!([]),
            )
            .await?;
        }
    }
    let row = txn
        .query_one_raw(stmt(
            &format!("SELECT {TURN_COLUMNS} FROM turns WHERE id = $1"),
            vec![turn.into()],
        ))
        .await?
        .ok_or(DbError::NotFound)?;
    txn.commit().await?;
    Ok(Turn::from_query_result(&row, "")?)
}

/// Undoes a turn that could not be queued (and its conversation, if the turn was its first).
pub async fn discard_turn(db: &DatabaseConnection, turn: &Turn) -> Result<()> {
    db.execute_raw(stmt(
        "DELETE FROM turns WHERE id = $1",
        vec![turn.id.into()],
    ))
    .await?;
    db.execute_raw(stmt(
        "DELETE FROM conversations c WHERE c.id = $1 AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.conversation_id = c.id)",
        vec![turn.conversation_id.into()],
    ))
    .await?;
    Ok(())
}

/// A turn of `user`'s (`None` for anyone else's).
pub async fn turn(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Turn>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {TURN_COLUMNS} FROM turns WHERE id = $1 AND user_id = $2"),
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(row.map(|r| Turn::from_query_result(&r, "")).transpose()?)
}

/// Marks a queued (or redelivered running) turn as running; `None` if it has finished or was
/// cancelled meanwhile.
pub async fn begin_turn(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Turn>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "UPDATE turns SET status = 'running', started_at = coalesce(started_at, now())
                 WHERE id = $1 AND user_id = $2 AND status IN ('queued', 'running')
                 RETURNING {TURN_COLUMNS}"
            ),
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(row.map(|r| Turn::from_query_result(&r, "")).transpose()?)
}

/// Records how a turn ended: `done`, `failed` or `cancelled`. Only the first ending counts.
pub async fn finish_turn(
    db: &impl ConnectionTrait,
    id: Uuid,
    status: &str,
    final_text: &str,
    citations: &serde_json::Value,
    usage: &serde_json::Value,
    error: Option<(&str, &str)>,
) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "UPDATE turns SET status = $2, final_text = $3, citations = $4, usage = $5,
                    error_code = $6, error_message = $7, finished_at = now()
             WHERE id = $1 AND status IN ('queued', 'running')",
            vec![
                id.into(),
                status.into(),
                final_text.into(),
                citations.clone().into(),
                usage.clone().into(),
                error.map(|e| e.0.to_owned()).into(),
                error.map(|e| e.1.to_owned()).into(),
            ],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Asks a turn to stop; `false` if it is not the user's or has already finished.
pub async fn request_cancel(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "UPDATE turns SET cancel_requested = true
             WHERE id = $1 AND user_id = $2 AND status IN ('queued', 'running')",
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn cancel_requested(db: &impl ConnectionTrait, id: Uuid) -> Result<bool> {
    let row = db
        .query_one_raw(stmt(
            "SELECT cancel_requested FROM turns WHERE id = $1",
            vec![id.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<bool>("", "cancel_requested")?,
        None => true,
    })
}

/// Stores one message of a turn; a redelivered turn recording the same step again is a no-op.
#[allow(clippy::too_many_arguments)]
pub async fn record_message(
    db: &impl ConnectionTrait,
    conversation: Uuid,
    turn: Uuid,
    step: i32,
    role: &str,
    content: &str,
    tool_calls: Option<serde_json::Value>,
    tool_call_id: Option<&str>,
    citations: &serde_json::Value,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO messages (conversation_id, turn_id, step, role, content, tool_calls, tool_call_id, citations)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (turn_id, step) DO NOTHING",
        vec![
            conversation.into(),
            turn.into(),
            step.into(),
            role.into(),
            content.into(),
            tool_calls.into(),
            tool_call_id.map(str::to_owned).into(),
            citations.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

const MESSAGE_COLUMNS: &str = "m.id, m.turn_id, m.step, m.role, m.content, m.tool_calls, m.tool_call_id, m.citations, m.created_at";

/// The conversation's messages before `turn` (every earlier turn), oldest first, then the
/// messages `turn` itself has recorded so far.
pub async fn history(
    db: &impl ConnectionTrait,
    conversation: Uuid,
    turn: Uuid,
) -> Result<(Vec<Message>, Vec<Message>)> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN turns t ON t.id = m.turn_id
                 WHERE m.conversation_id = $1
                   AND (t.id = $2 OR t.created_at < (SELECT created_at FROM turns WHERE id = $2))
                 ORDER BY t.created_at, m.step"
            ),
            vec![conversation.into(), turn.into()],
        ))
        .await?;
    let mut earlier = Vec::new();
    let mut own = Vec::new();
    for row in rows {
        let m = Message::from_query_result(&row, "")?;
        if m.turn_id == turn {
            own.push(m);
        } else {
            earlier.push(m);
        }
    }
    Ok((earlier, own))
}

/// The user's chat conversations (those tasks opened for the assistant's decisions are
/// reached through their task).
pub async fn conversations(
    db: &impl ConnectionTrait,
    user: UserId,
    limit: u64,
) -> Result<Vec<Conversation>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT id, title, created_at, updated_at FROM conversations
             WHERE user_id = $1 AND origin = 'chat' ORDER BY updated_at DESC LIMIT $2",
            vec![user.0.into(), (limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Conversation::from_query_result(r, "")?))
        .collect()
}

pub async fn conversation(
    db: &impl ConnectionTrait,
    user: UserId,
    id: Uuid,
) -> Result<Option<(Conversation, Vec<Turn>, Vec<Message>)>> {
    let Some(row) = db
        .query_one_raw(stmt(
            "SELECT id, title, created_at, updated_at FROM conversations WHERE id = $1 AND user_id = $2",
            vec![id.into(), user.0.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    let conversation = Conversation::from_query_result(&row, "")?;
    let turns = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {TURN_COLUMNS} FROM turns WHERE conversation_id = $1 ORDER BY created_at"
            ),
            vec![id.into()],
        ))
        .await?
        .iter()
        .map(|r| Turn::from_query_result(r, ""))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let messages = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN turns t ON t.id = m.turn_id
                 WHERE m.conversation_id = $1 ORDER BY t.created_at, m.step"
            ),
            vec![id.into()],
        ))
        .await?
        .iter()
        .map(|r| Message::from_query_result(r, ""))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Some((conversation, turns, messages)))
}

pub async fn delete_conversation(
    db: &impl ConnectionTrait,
    user: UserId,
    id: Uuid,
) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "DELETE FROM conversations WHERE id = $1 AND user_id = $2",
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// One call to the chat model.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub id: Uuid,
    pub user: UserId,
    pub turn: Option<Uuid>,
    pub provider: String,
    pub model: String,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub latency_ms: i32,
    pub first_token_ms: Option<i32>,
    /// `ok` or `error`.
    pub status: String,
    pub error: Option<String>,
}

pub async fn record_model_call(db: &impl ConnectionTrait, call: &ModelCall) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO model_calls (id, user_id, turn_id, provider, model, input_tokens, output_tokens,
                                  latency_ms, first_token_ms, status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
        vec![
            call.id.into(),
            call.user.0.into(),
            call.turn.into(),
            call.provider.clone().into(),
            call.model.clone().into(),
            call.input_tokens.into(),
            call.output_tokens.into(),
            call.latency_ms.into(),
            call.first_token_ms.into(),
            call.status.clone().into(),
            call.error.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A user's model usage on one day with one model.
#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Usage {
    pub day: chrono::NaiveDate,
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms: i64,
}

pub async fn usage(
    db: &impl ConnectionTrait,
    user: UserId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Usage>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, provider, model,
                    count(*) AS calls, coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
                    coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
                    coalesce(sum(latency_ms), 0)::bigint AS latency_ms
             FROM model_calls WHERE user_id = $1 AND created_at >= $2 AND created_at < $3
             GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2, 3",
            vec![
                user.0.into(),
                from.fixed_offset().into(),
                to.fixed_offset().into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Usage::from_query_result(r, "")?))
        .collect()
}

/// Tokens in, tokens out and model calls of one turn so far.
pub async fn turn_usage(db: &impl ConnectionTrait, turn: Uuid) -> Result<(i64, i64, i64)> {
    let row = db
        .query_one_raw(stmt(
            "SELECT coalesce(sum(input_tokens), 0)::bigint AS i, coalesce(sum(output_tokens), 0)::bigint AS o,
                    count(*) AS n FROM model_calls WHERE turn_id = $1",
            vec![turn.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => (
            r.try_get("", "i")?,
            r.try_get("", "o")?,
            r.try_get("", "n")?,
        ),
        None => (0, 0, 0),
    })
}

/// Records a tool invocation and its outcome (reads run at once; their record is the audit).
#[allow(clippy::too_many_arguments)]
pub async fn record_invocation(
    db: &impl ConnectionTrait,
    user: UserId,
    key: &str,
    tool: &str,
    arguments: &serde_json::Value,
    conversation: Option<Uuid>,
    turn: Option<Uuid>,
    tool_call_id: Option<&str>,
    model_call: Option<Uuid>,
    status: &str,
    result: &serde_json::Value,
    error: Option<&str>,
    started_at: DateTime<Utc>,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO tool_invocations (id, user_id, idempotency_key, tool, arguments, conversation_id,
                turn_id, tool_call_id, model_call_id, status, result, error, started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
         ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        vec![
            Uuid::new_v4().into(),
            user.0.into(),
            key.into(),
            tool.into(),
            arguments.clone().into(),
            conversation.into(),
            turn.into(),
            tool_call_id.map(str::to_owned).into(),
            model_call.into(),
            status.into(),
            result.clone().into(),
            error.map(str::to_owned).into(),
            started_at.fixed_offset().into(),
        ],
    ))
    .await?;
    Ok(())
}
