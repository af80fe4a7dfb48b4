//! The audit table of [`SqliteStore`](super::SqliteStore) (`migrations/0003_audit.sql`): appends inside the
//! writer's transactions, reads on the read pool, purges in bounded batches on the writer connection.
//!
//! Appends cost little next to the entries they ride with: `id` is the rowid and grows, so a row lands on
//! the rightmost page of the table's b-tree, like the log's; the table has no other index (see
//! `crate::storage::AuditRecord`'s module).

use std::sync::LazyLock;

use futures::TryStreamExt;
use sqlx::SqliteConnection;

use super::sql::{pieces, CHUNK_ROWS};
use crate::crdt::NodeId;
use crate::error::Result;
use crate::storage::AuditRecord;

const COLUMNS: &str = "id, time_ms, node, accessor, method, route, key, status, remote_addr";

/// Insert statements (replacing a row of the same id) for the row counts [`pieces`] cuts a batch into.
static INSERTS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    let mut sizes: Vec<usize> = (0..)
        .map(|bit| 1 << bit)
        .take_while(|&rows| rows < CHUNK_ROWS)
        .collect();
    sizes.push(CHUNK_ROWS);
    sizes
        .into_iter()
        .map(|rows| {
            let values = vec!["(?,?,?,?,?,?,?,?,?)"; rows].join(",");
            (
                rows,
                format!("INSERT OR REPLACE INTO audit ({COLUMNS}) VALUES {values}"),
            )
        })
        .collect()
});

fn insert_for(rows: usize) -> &'static str {
    INSERTS
        .iter()
        .find(|(size, _)| *size == rows)
        .map(|(_, sql)| sql.as_str())
        .expect("audit pieces are always a prepared size")
}

/// Insert `records` on `conn`, inside the caller's transaction.
pub(super) async fn insert(conn: &mut SqliteConnection, records: &[AuditRecord]) -> Result<()> {
    let mut rest = records;
    for size in pieces(records.len()) {
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        let mut query = sqlx::query(insert_for(size));
        for r in piece {
            query = query
                .bind(r.id as i64)
                .bind(r.time_ms as i64)
                .bind(r.node.0 as i64)
                .bind(r.accessor.as_str())
                .bind(r.method.as_str())
                .bind(r.route.as_str())
                .bind(r.key.as_deref())
                .bind(i64::from(r.status))
                .bind(r.remote_addr.as_deref());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
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
