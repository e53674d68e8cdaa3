//! Tasks the assistant carries out (a rule's firing, or a task started in chat) and what they
//! wait for: `GET /api/tasks`, `GET /api/tasks/{id}`, `POST /api/tasks/{id}/cancel`; and
//! the notifications rules and tasks leave: `GET /api/notifications`.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::routes::approvals::InvocationView;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tasks", get(list_tasks))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/tasks/{id}/cancel", post(cancel_task))
        .route("/api/notifications", get(notifications))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub title: String,
    /// `rule` (a rule fired) or `chat` (the user asked).
    pub origin: String,
    pub rule_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    /// running, waiting (for an event, a deadline or the assistant), waiting_approval, done,
    /// failed, cancelled, timed_out.
    pub state: String,
    /// The next step, from 0.
    pub step: i32,
    /// The steps, in the rule language.
    pub steps: Vec<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::tasks::Task> for TaskView {
    fn from(t: db::tasks::Task) -> Self {
        let steps = serde_json::from_value::<Vec<rules::Step>>(t.steps)
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        Self {
            id: t.id,
            title: t.title,
            origin: t.origin,
            rule_id: t.rule_id,
            event_id: t.event_id,
            state: t.state,
            step: t.step,
            steps,
            error: t.error,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitView {
    pub step: i32,
    /// pending (registered with the email it waits on), waiting, matched, timing_out,
    /// timed_out, cancelled.
    pub state: String,
    /// What it waits for, in the rule language.
    pub waits_for: String,
    /// For a reply: the Message-ID and thread of the email it answers.
    #[schema(value_type = Object)]
    pub expect: serde_json::Value,
    pub until: Option<DateTime<Utc>>,
    /// The event that ended it.
    #[schema(value_type = Option<Object>)]
    pub matched_event: Option<serde_json::Value>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    /// What happened so far: the event, each step's result, the reply.
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    pub waits: Vec<WaitView>,
    /// Every action the task took or proposed, in order.
    pub invocations: Vec<InvocationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tasks {
    pub tasks: Vec<TaskView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskParams {
    pub state: Option<String>,
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/tasks", tag = "rules", params(TaskParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Your tasks, newest first", body = Tasks), (status = 422, body = ErrorBody)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<TaskParams>,
) -> Result<Json<Tasks>, ApiError> {
    let limit = super::list_limit(params.limit)?;
    let tasks = db::tasks::list(&state.db, user, params.state.as_deref(), limit)
        .await?
        .into_iter()
        .map(TaskView::from)
        .collect();
    Ok(Json(Tasks { tasks }))
}

async fn detail(state: &AppState, task: db::tasks::Task) -> Result<TaskDetail, ApiError> {
    let waits = db::tasks::waits_of(&state.db, task.id)
        .await?
        .into_iter()
        .map(|w| WaitView {
            step: w.step,
            state: w.state,
            waits_for: serde_json::from_value::<rules::Wait>(w.wait)
                .map(|s| rules::Step::Wait(s).to_string())
                .unwrap_or_default(),
            expect: w.expect,
            until: w.deadline,
            matched_event: w.matched_event,
            resolved_at: w.resolved_at,
        })
        .collect();
    let invocations = db::invocations::of_task(&state.db, task.id)
        .await?
        .into_iter()
        .map(InvocationView::from)
        .collect();
    Ok(TaskDetail {
        context: task.context.clone(),
        task: task.into(),
        waits,
        invocations,
    })
}

#[utoipa::path(get, path = "/api/tasks/{id}", tag = "rules", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The task: its steps, where it is, what it waits for and until when, what it did", body = TaskDetail), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<TaskDetail>, ApiError> {
    let task = db::tasks::get_for(&state.db, user, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such task".into()))?;
    Ok(Json(detail(&state, task).await?))
}

#[utoipa::path(post, path = "/api/tasks/{id}/cancel", tag = "rules", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Cancelled (its waits end, its pending approvals are rejected); a task that had already ended is returned as it is", body = TaskDetail),
        (status = 404, body = ErrorBody),
    ))]
pub async fn cancel_task(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<TaskDetail>, ApiError> {
    let task = db::tasks::cancel(&state.db, user, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such task".into()))?;
    Ok(Json(detail(&state, task).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub text: String,
    pub task_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Notifications {
    pub notifications: Vec<NotificationView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationParams {
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/notifications", tag = "rules", params(NotificationParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "What rules and tasks told you (`notify`, a wait that timed out), newest first", body = Notifications)))]
pub async fn notifications(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<NotificationParams>,
) -> Result<Json<Notifications>, ApiError> {
    let limit = super::list_limit(params.limit)?;
    let notifications = db::tasks::notifications(&state.db, user, limit)
        .await?
        .into_iter()
        .map(|n| NotificationView {
            id: n.id,
            text: n.text,
            task_id: n.task_id,
            rule_id: n.rule_id,
            created_at: n.created_at,
        })
        .collect();
    Ok(Json(Notifications { notifications }))
}
