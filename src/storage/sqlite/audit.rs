//! The audit table of [`SqliteStore`](super::SqliteStore) (`migrations/0003_audit.sql`): inserts with the
//! writer's `COMMIT`, reads on the read pool, purges in bounded batches on the writer connection.
//!
//! Appends cost little next to the entries they ride with: `id` is the rowid and grows, so a row lands on
//! the rightmost page of the table's b-tree, like the log's; the table has no other index (see
//! `crate::storage::AuditRecord`'s module).

use futures::TryStreamExt;
use sqlx::SqliteConnection;

use crate::crdt::NodeId;
use crate::error::Result;
use crate::storage::AuditRecord;

/// The insert of [`INSERT_AND_COMMIT_SQL`], its one parameter unnumbered (`?`) so that it also binds in
/// order after other statements of one call (see `super::sql::append_in_one_call`).
macro_rules! insert_audit_rows {
    () => {
        "INSERT OR REPLACE INTO audit \
         (id, time_ms, node, accessor, method, route, key, status, remote_addr) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
         json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), \
         json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]') \
         FROM json_each(?) ORDER BY key"
    };
}
pub(super) use insert_audit_rows;

/// Every record of a commit in one statement, whatever their number, with one bound parameter (a JSON array
/// of rows), run in the same call as the transaction's `COMMIT`: the records add no round trip to the
/// connection's worker thread, which under load cost more than the inserts themselves (a statement per
/// power-of-two piece of rows, as the log's appends are cut, added about a third to a PUT's CPU time).
pub(super) const INSERT_AND_COMMIT_SQL: &str = concat!(insert_audit_rows!(), "; COMMIT");

/// `records` as the JSON parameter of [`INSERT_AND_COMMIT_SQL`]. `node` and `id` are bit-cast to i64 like
/// every u64 the store keeps.
pub(super) fn rows_json(records: &[AuditRecord]) -> Result<String> {
    // Tuples of references serialise to the same arrays as `json!` built them, without a `Value` (and a copy
    // of every string) per field first.
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.id as i64,
                r.time_ms as i64,
                r.node.0 as i64,
                &r.accessor,
                &r.method,
                &r.route,
                &r.key,
                r.status,
                &r.remote_addr,
            )
        })
        .collect();
    serde_json::to_string(&rows).map_err(crate::error::Error::internal)
}

/// A row as sqlx decodes it.
type Row = (
    i64,
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
);

fn into_record((id, time_ms, node, accessor, method, route, key, status, remote_addr): Row) -> AuditRecord {
    AuditRecord {
        id: id as u64,
        time_ms: time_ms as u64,
        node: NodeId(node as u64),
        accessor,
        method,
        route,
        key,
        status: u16::try_from(status).unwrap_or(0),
        remote_addr,
    }
}

/// At most `limit` records with an id greater than `after`, in id order, read on `conn` (a reader).
pub(super) async fn scan<'c, E>(conn: E, after: u64, limit: usize) -> Result<Vec<AuditRecord>>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let sql = "SELECT id, time_ms, node, accessor, method, route, key, status, remote_addr FROM audit \
               WHERE id > ? ORDER BY id LIMIT ?";
    let rows = sqlx::query_as::<_, Row>(sql)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch(conn)
        .map_ok(into_record)
        .try_collect()
        .await?;
    Ok(rows)
}

/// The time of the first record with an id at least `id` (a seek in the rowid b-tree).
pub(super) async fn time_at<'c, E>(conn: E, id: u64) -> Result<Option<u64>>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let time: Option<i64> = sqlx::query_scalar("SELECT time_ms FROM audit WHERE id >= ? ORDER BY id LIMIT 1")
        .bind(i64::try_from(id).unwrap_or(i64::MAX))
        .fetch_optional(conn)
        .await?;
    Ok(time.map(|t| t as u64))
}

/// Of the `max_rows` records with the lowest ids, delete those older than `before_ms`: a walk of the
/// rowid b-tree's first leaves, whatever the table's size. One statement, so one transaction.
pub(super) async fn purge(conn: &mut SqliteConnection, before_ms: u64, max_rows: usize) -> Result<usize> {
    let deleted = sqlx::query(
        "DELETE FROM audit WHERE id IN (SELECT id FROM (SELECT id, time_ms FROM audit ORDER BY id LIMIT ?2) \
         WHERE time_ms < ?1)",
    )
    .bind(i64::try_from(before_ms).unwrap_or(i64::MAX))
    .bind(i64::try_from(max_rows).unwrap_or(i64::MAX))
    .execute(conn)
    .await?
    .rows_affected();
    Ok(deleted as usize)
}

/// The greatest id ever stored: AUTOINCREMENT keeps it in `sqlite_sequence`, also for explicit ids.
pub(super) async fn last_id(conn: &mut SqliteConnection) -> Result<u64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
        .fetch_optional(&mut *conn)
        .await?;
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit").fetch_one(conn).await?;
    Ok(seq.unwrap_or(0).max(max.unwrap_or(0)).max(0) as u64)
}
