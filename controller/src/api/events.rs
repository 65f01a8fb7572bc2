//! `GET /api/v1/events`: Server-Sent Events of committed changes (runs, actions, approvals,
//! alerts, controller status) from the store's [`EventBus`](crate::events::EventBus).
//!
//! Each SSE event is named after the change (`run`, `action`, `approval`, `alert`,
//! `controller`) and carries the event as JSON. Events say what changed, not the new state:
//! clients read it through the API. A subscriber that falls behind gets one `resync` event
//! (re-read what you show) instead of an error, and the stream goes on. A keep-alive comment
//! every 15 seconds keeps proxies from closing an idle stream. A user's stream ends once that
//! user signs out or is disabled (checked every `session_recheck`, 5 s by default). This
//! module never blocks the publisher.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Caller, CallerKind};
use super::error::{ApiError, ErrorBody};
use crate::events::Event;
use crate::model::{Role, Scope};

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The session a user's stream was opened in.
struct Session {
    user_id: i64,
    version: i64,
}

impl Session {
    /// Whether the user is still enabled and has not signed out since. A database error
    /// keeps the stream (the next check reads again).
    async fn still_open(&self, state: &AppState) -> bool {
        match state.store().get_user(self.user_id).await {
            Ok(user) => !user.disabled && user.session_version == self.version,
            Err(crate::store::StoreError::NotFound { .. }) => false,
            Err(e) => {
                tracing::warn!(error = %e, "check an event stream's session");
                true
            }
        }
    }
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
    // A user's stream lasts as long as the session it was opened in.
    let session = match caller.kind {
        CallerKind::User { id, .. } => Some(Session {
            user_id: id,
            version: state.store().get_user(id).await?.session_version,
        }),
        CallerKind::ApiKey { .. } => None,
    };
    let rx = state.store().events().subscribe();
    let mut recheck = tokio::time::interval(state.settings().session_recheck);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (rx, recheck, state, session),
        |(mut rx, mut recheck, state, session)| async move {
            let received = loop {
                tokio::select! {
                    received = rx.recv() => break received,
                    _ = recheck.tick() => {
                        if let Some(session) = &session
                            && !session.still_open(&state).await
                        {
                            return None;
                        }
                    }
                }
            };
            let item = match received {
                Ok(event) => to_sse(&event),
                Err(RecvError::Lagged(missed)) => SseEvent::default()
                    .event("resync")
                    .data(format!("{{\"missed\":{missed}}}")),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(item), (rx, recheck, state, session)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
