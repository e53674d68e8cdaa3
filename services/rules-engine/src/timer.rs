//! Deadlines: waits whose time passed are taken (replicas take disjoint sets) and handed to
//! tool-executor, which runs their `else` action once. A wait taken but never handled (the
//! publish failed, the process died) is taken again after 30 seconds. A task's approval that
//! expired is marked so and the task handed over, to end.

use common::Bus;
use common::UserId;
use common::events::Envelope;
use db::DatabaseConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(db: DatabaseConnection, bus: Bus, every: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = tick(&db, &bus).await {
            tracing::warn!(error = %e, "checking due waits failed; trying again next tick");
        }
        // Per-user counting windows older than a day are forgotten, hourly.
        if swept.elapsed() > Duration::from_secs(3_600) {
            swept = std::time::Instant::now();
            if let Err(e) = db::quota::sweep(&db).await {
                tracing::warn!(error = %e, "forgetting old quota windows failed");
            }
        }
    }
}

async fn tick(
    db: &DatabaseConnection,
    bus: &Bus,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let due = db::tasks::claim_due(db, 100).await?;
        let count = due.len();
        for (user, task, step) in due {
            bus.publish(&Envelope::task_advance(UserId(user), task, step, "timeout"))
                .await?;
            metrics::counter!("tasks_wait_timeouts_total").increment(1);
            tracing::info!(task.id = %task, step, "wait timed out; handed over");
        }
        if count < 100 {
            break;
        }
    }
    // A task's write nobody approved in time never runs: the task learns so and ends.
    for (user, task, invocation) in db::invocations::expire_task_approvals(db, 100).await? {
        let advance =
            Envelope::task_advance(UserId(user), task, 0, format!("expired:{invocation}"));
        bus.publish(&advance).await?;
        tracing::info!(task.id = %task, invocation.id = %invocation, "a task's approval expired; handed over");
    }
    // A hand-over lost after a decision (the process died before publishing it): once a minute
    // per task at most, the dedup key says.
    let minute = chrono::Utc::now().timestamp() / 60;
    for (user, task) in db::tasks::stalled(db, 100).await? {
        let advance = Envelope::task_advance(UserId(user), task, 0, format!("sweep:{minute}"));
        bus.publish(&advance).await?;
        tracing::info!(task.id = %task, "a task's decided approval was never handed over; handed over now");
    }
    Ok(())
}
