//! `GET /api/v1/watch/{prefix}`: Server-Sent Events of every change under a prefix.
//!
//! The stream opens with a `ready` event (subscribed: every later change will be delivered), then one event
//! per committed change, local or replicated: `put` or `delete`, data being the entry as JSON (secrets stay
//! sealed); for a lock named under the prefix, `lock` when it is granted or its hold extended and `unlock`
//! when it is released (a hold that ends with its lease sends nothing: no record changes). The entry is read when the event is sent, not when it was committed, so that a watcher that
//! does not read holds no values (see the `db` module docs): a change that a newer one replaced before the
//! watcher got to it is skipped, and the newer one follows. A watcher more than
//! [`EVENT_BUFFER`](crate::db::EVENT_BUFFER) changes behind gets a `lagged` event saying how many it missed;
//! it should re-read what it cares about. The prefix is a folder: `app/db` matches `app/db` and
//! `app/db/...`, not `app/dbx`; an empty prefix matches everything except the keys reserved for Cave, and a
//! prefix inside the reserved folder is refused (403).

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
use crate::acl::{Access, Capability};
use crate::crdt::lock::{name_of_key, Grant};
use crate::crdt::Entry;
use crate::error::Result;
use crate::key;

/// Interval of SSE keep-alive comments, so proxies do not close an idle stream.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The handler.
pub async fn watch(
    State(app): State<Arc<AppState>>,
    access: Access,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let raw = path_after(uri.path(), "/api/v1/watch")?;
    let folder = raw.strip_suffix('/').unwrap_or(&raw).to_string();
    key::validate_folder(&folder)?;
    // The stream carries only events of keys the token may read (checked per event: a rule may cover
    // part of the folder).
    access.require_some_below(Capability::Read, &folder)?;
    // Subscribe before answering, so nothing committed after the `ready` event is missed.
    let changes = BroadcastStream::new(app.db.subscribe());
    // Counted in `cave_watch_subscribers` for as long as the stream (which owns the guard) lives.
    let subscriber = app.metrics.watch_subscriber();
    let below = key::folder_prefix(&folder);
    let db = app.db.clone();
    let events = changes.filter_map(move |change| {
        let _counted = &subscriber;
        let under = |k: &str| folder.is_empty() || k == folder || k.starts_with(&below);
        let event = match change {
            // A lock's record: watched as the lock's name, a key path like any other.
            Ok(change) if name_of_key(&change.key).is_some_and(|n| under(n) && access.may(Capability::Read, n)) => {
                db.resolve(&change).and_then(|entry| lock_event(&entry))
            }
            Ok(change)
                if !key::is_reserved(&change.key)
                    && under(&change.key)
                    && access.may(Capability::Read, &change.key) =>
            {
                db.resolve(&change).and_then(|entry| {
                    // The tombstone an expiry or a lease's end leaves keeps what ended it.
                    let kind = match (entry.deleted, entry.expires.is_some() || entry.lease.is_some()) {
                        (true, true) => "expire",
                        (true, false) => "delete",
                        (false, _) => "put",
                    };
                    Event::default().event(kind).json_data(EntryJson::from(&entry)).ok()
                })
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

/// `lock` (granted, or its hold extended) or `unlock` (released) for a lock's record, data
/// `{"lock","holder","fence","expires_ms"}`.
fn lock_event(entry: &Entry) -> Option<Event> {
    let name = name_of_key(&entry.key)?;
    let grant = Grant::of_entry(entry)?;
    let kind = if grant.lease.is_some() { "lock" } else { "unlock" };
    let data = serde_json::json!({
        "lock": name,
        "holder": grant.lease,
        "fence": grant.fence,
        "expires_ms": grant.expires_ms,
    });
    Event::default().event(kind).json_data(data).ok()
}
