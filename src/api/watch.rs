//! `GET /api/v1/watch/{prefix}`: Server-Sent Events of every change under a prefix.
//!
//! The stream opens with a `ready` event (subscribed: every later change will be delivered), then one event
//! per committed change, local or replicated: `put` or `delete`, data being the entry as JSON (secrets stay
//! sealed). A watcher too slow to keep up gets a `lagged` event saying how many changes it missed; it should
//! re-read what it cares about. The prefix is a folder: `app/db` matches `app/db` and `app/db/...`, not
//! `app/dbx`; an empty prefix matches everything.

use std::sync::Arc;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::encoding::{path_after, EntryJson};
use super::AppState;
use crate::error::Result;
use crate::key;

/// Interval of SSE keep-alive comments, so proxies do not close an idle stream.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The handler.
pub async fn watch(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let raw = path_after(uri.path(), "/api/v1/watch")?;
    let folder = raw.strip_suffix('/').unwrap_or(&raw).to_string();
    key::validate_prefix(&folder)?;
    // Subscribe before answering, so nothing committed after the `ready` event is missed.
    let changes = BroadcastStream::new(app.db.subscribe());
    // Counted in `cave_watch_subscribers` for as long as the stream (which owns the guard) lives.
    let subscriber = app.metrics.watch_subscriber();
    let below = key::folder_prefix(&folder);
    let events = changes.filter_map(move |change| {
        let _counted = &subscriber;
        let event = match change {
            Ok(entry) if folder.is_empty() || entry.key == folder || entry.key.starts_with(&below) => {
                let kind = if entry.deleted { "delete" } else { "put" };
                Event::default().event(kind).json_data(EntryJson::from(&*entry)).ok()
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(
                Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{missed}}}")),
            ),
        };
        futures::future::ready(event.map(Ok))
    });
    let ready = stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    // End the stream when the node shuts down: an endless response would hold graceful shutdown forever.
    let stream = ready.chain(events).take_until(app.db.shutting_down());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL)))
}
