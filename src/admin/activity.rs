//! The delivery debugger's API: a workspace's recent events with their
//! outcome, its recent requests to Segment, and a live tail of both, as this
//! instance saw them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::openapi::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::extract::listing;
use super::workspaces::no_such_workspace;
use crate::activity::{Activity, DeliveryView, EventView, Filter, Live, Outcome};
use crate::domain::WorkspaceId;
use crate::http::error::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// How many, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Only this outcome.
    #[param(schema_with = outcome_schema)]
    outcome: Option<String>,
    /// Only this event name (as sent).
    event: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// How many, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityPage {
    /// The instance that answered; other instances keep their own.
    instance: String,
    events: Vec<EventView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    instance: String,
    deliveries: Vec<DeliveryView>,
}

/// The workspace's recent events as this instance saw them, newest first:
/// each with its outcome (`queued`, `delivered`, `refused` with the code,
/// `not_selected`, `dead_lettered`, `erased`). An event may appear more than
/// once (queued, then delivered), on different instances.
#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}/activity", tag = "admin", operation_id = "getActivity",
    params(WorkspaceId, ActivityQuery),
    responses((status = 200, body = ActivityPage)),
)]
pub async fn activity(
    State(app): State<AdminState>,
    id: WorkspaceId,
    query: Result<Query<ActivityQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ActivityPage>, ApiError> {
    let (query, limit) = listing(query, |q| q.limit)?;
    if let Some(outcome) = query.outcome.as_deref()
        && !Outcome::NAMES.contains(&outcome)
    {
        let names = Outcome::NAMES.join(", ");
        return Err(ApiError::invalid(Some("outcome"), format!("outcome must be one of {names}")));
    }
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let filter = Filter { outcome: query.outcome.as_deref(), event: query.event.as_deref() };
    let activity = &app.activity;
    let events =
        activity.events(&id, &filter, limit).iter().map(|e| e.view(activity.instance(), activity.ids())).collect();
    Ok(Json(ActivityPage { instance: activity.instance().to_owned(), events }))
}

/// The workspace's recent requests to Segment from this instance, newest
/// first: events, bytes, Segment's status and latency, and what followed.
#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}/deliveries", tag = "admin", operation_id = "getDeliveries",
    params(WorkspaceId, LimitQuery),
    responses((status = 200, body = DeliveryPage)),
)]
pub async fn deliveries(
    State(app): State<AdminState>,
    id: WorkspaceId,
    query: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let (_, limit) = listing(query, |q| q.limit)?;
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let activity = &app.activity;
    let deliveries = activity.deliveries(&id, limit).iter().map(|d| d.view(activity.instance())).collect();
    Ok(Json(DeliveryPage { instance: activity.instance().to_owned(), deliveries }))
}

/// A live tail of the workspace's activity on this instance, as Server-Sent
/// Events: `activity` (an event entry), `delivery` (a request to Segment),
/// a `heartbeat` comment every `activity.heartbeat_ms`, and `dropped` before
/// the stream ends when the client fell too far behind. Ends when the
/// service stops.
#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}/activity/stream", tag = "admin", operation_id = "streamActivity",
    params(WorkspaceId),
    responses((status = 200, description = "`text/event-stream`", content_type = "text/event-stream", body = String)),
)]
pub async fn stream(
    State(app): State<AdminState>,
    id: WorkspaceId,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let tail = Tail { receiver: app.activity.subscribe(&id), activity: app.activity.clone() };
    let closing = app.activity.closing().clone();
    let events = futures_util::stream::unfold(Some((tail, closing)), |state| async move {
        let (mut tail, closing) = state?;
        let next = tokio::select! {
            () = closing.cancelled() => return None,
            next = tail.receiver.recv() => next,
        };
        match next {
            Ok(live) => Some((Ok(tail.event(&live)), Some((tail, closing)))),
            Err(RecvError::Lagged(missed)) => {
                let dropped =
                    Event::default().event("dropped").data(format!("the client fell {missed} entries behind"));
                Some((Ok(dropped), None))
            }
            // The workspace was forgotten (deleted, or the least recently active).
            Err(RecvError::Closed) => None,
        }
    });
    let heartbeat = KeepAlive::new().interval(app.activity.heartbeat()).text("heartbeat");
    Ok(Sse::new(events).keep_alive(heartbeat))
}

struct Tail {
    receiver: broadcast::Receiver<Live>,
    activity: Arc<Activity>,
}

impl Tail {
    fn event(&self, live: &Live) -> Event {
        let instance = self.activity.instance();
        let event = match live {
            Live::Event(entry) => {
                Event::default().event("activity").json_data(entry.view(instance, self.activity.ids()))
            }
            Live::Delivery(attempt) => Event::default().event("delivery").json_data(attempt.view(instance)),
        };
        event.expect("an activity entry serializes")
    }
}

fn outcome_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(Outcome::NAMES))
}
