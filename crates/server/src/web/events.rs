//! `GET /events`: server-sent events from the change hub, one `change` event (its data the
//! journal cursor) each time a batch or lock change of the user commits on any server of the
//! database. The page's script then fetches the page again and swaps its live part in.

use super::WebUser;
use crate::routes::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;
use std::time::Duration;

pub(crate) async fn events(
    State(state): State<AppState>,
    user: WebUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.hub.subscribe(user.principal.user_id);
    let stopping = state.stopping.clone();
    let stream = futures::stream::unfold(
        (receiver, stopping),
        |(mut receiver, stopping)| async move {
            tokio::select! {
                changed = receiver.changed() => {
                    changed.ok()?;
                    let cursor = *receiver.borrow_and_update();
                    let event = Event::default().event("change").data(cursor.0.to_string());
                    Some((Ok(event), (receiver, stopping)))
                }
                () = stopping.cancelled() => None,
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
}
