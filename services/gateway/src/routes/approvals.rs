//! Writes waiting for the user, and the audit of every tool invocation: who asked (the
//! conversation turn), the arguments, the approval, the result, the timing and the model call
//! that proposed it.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use common::UserId;
use common::events::{ApprovalsSettled, Envelope, Event};
use db::invocations::{AuditFilter, Decided, Invocation};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/approvals", get(list_approvals))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/reject", post(reject))
        .route("/api/audit", get(audit))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvocationView {
    /// Also the approval id.
    pub id: Uuid,
    pub tool: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// awaiting_approval, held (waits with a sibling call), approved, running, succeeded,
    /// failed, rejected or expired.
    pub status: String,
    /// Why it waits for approval, if it does.
    pub approval_reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub conversation_id: Option<Uuid>,
    pub turn_id: Option<Uuid>,
    /// The model call that proposed it.
    pub model_call_id: Option<Uuid>,
    /// The task whose step made it, and the rule that started that task.
    pub task_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    /// The task step (or, in chat, the message step) it belongs to.
    pub step: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Invocation> for InvocationView {
    fn from(i: Invocation) -> Self {
        Self {
            id: i.id,
            tool: i.tool,
            arguments: i.arguments,
            status: i.status,
            approval_reason: i.approval_reason,
            expires_at: i.expires_at,
            decided_at: i.decided_at,
            conversation_id: i.conversation_id,
            turn_id: i.turn_id,
            model_call_id: i.model_call_id,
            task_id: i.task_id,
            rule_id: i.rule_id,
            step: i.step,
            result: i.result,
            error: i.error,
            attempts: i.attempts,
            created_at: i.created_at,
            started_at: i.started_at,
            finished_at: i.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invocations {
    pub invocations: Vec<InvocationView>,
}

#[utoipa::path(
    get,
    path = "/api/approvals",
    tag = "chat",
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Writes waiting for your approval, newest first (expired ones are gone)", body = Invocations))
)]
pub async fn list_approvals(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Invocations>, ApiError> {
    db::invocations::expire_due(&state.db).await?;
    let filter = AuditFilter {
        status: Some("awaiting_approval".into()),
        limit: 200,
        ..Default::default()
    };
    let invocations = db::invocations::audit(&state.db, user, &filter)
        .await?
        .into_iter()
        .map(InvocationView::from)
        .collect();
    Ok(Json(Invocations { invocations }))
}

async fn decide(
    state: &AppState,
    user: UserId,
    id: Uuid,
    approve: bool,
) -> Result<Json<InvocationView>, ApiError> {
    let wanted = if approve { "approved" } else { "rejected" };
    let invocation = match db::invocations::decide(&state.db, user, id, approve).await? {
        Decided::Done(i) => i,
        // Asked again (a retry after a lost answer): the same decision stands.
        Decided::NotWaiting(i)
            if i.status == wanted
                || (approve && i.decided_at.is_some() && i.status != "rejected") =>
        {
            i
        }
        Decided::NotWaiting(i) if i.status == "expired" => {
            return Err(ApiError::Conflict(
                "the approval expired; it will never run".into(),
            ));
        }
        Decided::NotWaiting(i) => {
            return Err(ApiError::Conflict(format!(
                "the invocation is no longer waiting (it is {})",
                i.status
            )));
        }
        Decided::NotFound => return Err(ApiError::NotFound("no such approval".into())),
    };
    if let Some(turn) = invocation.turn_id {
        let step = db::invocations::of_step(&state.db, turn, &format!("turn:{turn}:")).await?;
        if !step.iter().any(|i| i.status == "awaiting_approval") {
            // Every call of the step is settled: the executor runs what may run, once.
            let envelope = Envelope::new(
                user,
                Event::ApprovalsSettled(ApprovalsSettled { turn_id: turn }),
            );
            state
                .bus
                .publish(&envelope)
                .await
                .map_err(ApiError::Unavailable)?;
        }
    } else if let Some(task) = invocation.task_id {
        // The task carries on from this step: the approved write runs once, a rejected one
        // ends the task.
        let envelope = Envelope::task_advance(
            user,
            task,
            invocation.step.unwrap_or(0),
            format!("approval:{}", invocation.id),
        );
        state
            .bus
            .publish(&envelope)
            .await
            .map_err(ApiError::Unavailable)?;
    }
    Ok(Json(InvocationView::from(invocation)))
}

#[utoipa::path(
    post,
    path = "/api/approvals/{id}/approve",
    tag = "chat",
    params(("id" = Uuid, Path, description = "The approval (invocation) id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Approved; once every approval of its step is settled, the executor runs it exactly once and adds the result to the conversation", body = InvocationView),
        (status = 404, description = "No such approval of yours", body = ErrorBody),
        (status = 409, description = "Expired, rejected or otherwise no longer waiting", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; the decision is kept, repeat the request", body = ErrorBody),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<InvocationView>, ApiError> {
    decide(&state, user, id, true).await
}

#[utoipa::path(
    post,
    path = "/api/approvals/{id}/reject",
    tag = "chat",
    params(("id" = Uuid, Path, description = "The approval (invocation) id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Rejected: it never runs", body = InvocationView),
        (status = 404, description = "No such approval of yours", body = ErrorBody),
        (status = 409, description = "Expired, approved or otherwise no longer waiting", body = ErrorBody),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<InvocationView>, ApiError> {
    decide(&state, user, id, false).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditParams {
    pub conversation: Option<Uuid>,
    pub tool: Option<String>,
    pub status: Option<String>,
    /// Only what this rule's firings did.
    pub rule: Option<Uuid>,
    /// Only what this task did.
    pub task: Option<Uuid>,
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "chat",
    params(AuditParams),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every tool invocation, newest first: why the assistant did what it did", body = Invocations),
        (status = 422, description = "`limit` out of range", body = ErrorBody),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<AuditParams>,
) -> Result<Json<Invocations>, ApiError> {
    let limit = super::list_limit(params.limit)?;
    let filter = AuditFilter {
        conversation: params.conversation,
        tool: params.tool,
        status: params.status,
        rule: params.rule,
        task: params.task,
        limit,
    };
    let invocations = db::invocations::audit(&state.db, user, &filter)
        .await?
        .into_iter()
        .map(InvocationView::from)
        .collect();
    Ok(Json(Invocations { invocations }))
}
