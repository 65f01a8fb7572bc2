//! `GET /api/v1/events`: Server-Sent Events of committed changes (runs, actions, approvals,
//! alerts, controller status) from the store's [`EventBus`](crate::events::EventBus).
//!
//! Each SSE event is named after the change (`run`, `action`, `approval`, `alert`,
//! `controller`) and carries the event as JSON. Events say what changed, not the new state:
//! clients read it through the API. A subscriber that falls behind gets one `resync` event
//! (re-read what you show) instead of an error, and the stream goes on. A keep-alive comment
//! every 15 seconds keeps proxies from closing an idle stream. This module never blocks the
//! publisher.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::events::Event;
use crate::model::{Role, Scope};

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The SSE form of one bus event.
fn to_sse(event: &Event) -> SseEvent {
    match SseEvent::default().event(event.name()).json_data(event) {
        Ok(sse) => sse,
        // Serializing these plain enums cannot fail; say "re-read" if it ever does.
        Err(_) => SseEvent::default().event("resync").data("{}"),
    }
}

/// Live changes as Server-Sent Events.
#[utoipa::path(get, path = "/api/v1/events", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "an SSE stream: events `run`, `action`, `approval`, `alert`, `controller`, and `resync` after missed events", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let rx = state.store().events().subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let item = match rx.recv().await {
            Ok(event) => to_sse(&event),
            Err(RecvError::Lagged(missed)) => SseEvent::default()
                .event("resync")
                .data(format!("{{\"missed\":{missed}}}")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(item), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
