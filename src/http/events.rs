//! `GET /events`: every call event as Server-Sent Events, one JSON object
//! per event (`curl -N http://127.0.0.1:8080/events`), optionally for one
//! call only (`?call={id}`).
//!
//! The stream reads from the event bus's bounded ring. A reader that falls
//! more than `events::BACKLOG` events behind (a stalled `curl`, a full TCP
//! window) is told so in a last comment and cut off, so it never holds
//! memory on siprelay's side.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::events::BusEvent;

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventFilter {
    /// Only this call's events.
    call: Option<String>,
}

/// The live event stream.
#[utoipa::path(get, path = "/events", tag = "events",
    params(EventFilter),
    responses(
        (status = 200, description = "`text/event-stream`: each event's `data` is one JSON `CallEvent` or `AccountEvent`",
            content_type = "text/event-stream", body = crate::events::BusEvent),
        (status = 400, description = "Bad query", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // Subscribed before the response starts: nothing after it is missed.
    let rx = state.board.events.subscribe();
    let board = state.board.clone();
    let events = watch(rx, filter.call).map(move |item| {
        Ok(match item {
            Watched::Event(e) => {
                Event::default().data(serde_json::to_string(&*e).unwrap_or_default())
            }
            Watched::CutOff(missed) => {
                board.metrics.event_watchers_cut.inc();
                tracing::info!(missed, "event stream reader fell behind; cut off");
                Event::default().comment(format!("cut off: {missed} events behind"))
            }
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What a watcher is sent.
#[derive(Debug)]
pub enum Watched {
    Event(Arc<BusEvent>),
    /// The watcher fell this many events behind; the stream ends here.
    CutOff(u64),
}

/// The bus as a stream for one watcher, optionally of one call's events.
pub fn watch(
    rx: broadcast::Receiver<Arc<BusEvent>>,
    call: Option<String>,
) -> impl Stream<Item = Watched> {
    futures_util::stream::unfold(Some(rx), move |rx| {
        let call = call.clone();
        async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(e) if call.as_ref().is_some_and(|c| e.call_id() != Some(c)) => continue,
                    Ok(e) => return Some((Watched::Event(e), Some(rx))),
                    Err(RecvError::Lagged(missed)) => return Some((Watched::CutOff(missed), None)),
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::call::state::Direction;
    use crate::call::{Call, CallId};
    use crate::events::{CallEvent, EventBus, BACKLOG};

    fn call() -> Arc<Call> {
        let id = CallId::generate();
        Call::new(
            id,
            Direction::Inbound,
            "1001".into(),
            "2000".into(),
            None,
            None,
        )
        .0
    }

    #[tokio::test]
    async fn one_call_only_when_asked() {
        let bus = EventBus::default();
        let (a, b) = (call(), call());
        let mut only_b = Box::pin(watch(bus.subscribe(), Some(b.id.to_string())));
        bus.publish(|| CallEvent::new("RING_ANS", &a));
        bus.publish(|| CallEvent::new("RING_ANS", &b));
        match only_b.next().await {
            Some(Watched::Event(e)) => assert_eq!(e.call_id(), Some(b.id.as_str())),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_cut_off() {
        let bus = EventBus::default();
        let c = call();
        let mut stream = Box::pin(watch(bus.subscribe(), None));
        bus.publish(|| CallEvent::new("RINGING", &c));
        assert!(matches!(stream.next().await, Some(Watched::Event(_))));
        for _ in 0..BACKLOG + 3 {
            bus.publish(|| CallEvent::new("RINGING", &c));
        }
        assert!(matches!(stream.next().await, Some(Watched::CutOff(3))));
        assert!(stream.next().await.is_none(), "the stream ends");
    }
}
