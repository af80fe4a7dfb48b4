-- The audit trail: one row per sensitive request this node served (a write, a delete, a secret opened, an
-- ACL change, a 401/403), never a value or a token. See `src/audit/mod.rs`.
--
-- `id` is assigned by the database layer's writer in commit order (so a reader paging by `id` never misses a
-- row committed after its page), explicitly, into an AUTOINCREMENT column: SQLite then remembers the largest
-- id ever stored in `sqlite_sequence`, so ids are never reused even after retention purged every row, and a
-- reader's cursor stays valid across restarts.
--
-- `node` is the node id, a u64 bit-cast to i64 as in `kv` (see 0001_init.sql).
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms     INTEGER NOT NULL, -- milliseconds since the Unix epoch, the serving node's clock
    node        INTEGER NOT NULL, -- u64 bit-cast to i64
    accessor    TEXT    NOT NULL, -- the token's public accessor, `anonymous` without one
    method      TEXT    NOT NULL,
    route       TEXT    NOT NULL, -- the route template, or the path (never the query) when none matched
    key         TEXT,             -- the decoded key (or other name) the route names, if any
    status      INTEGER NOT NULL, -- the HTTP status answered
    remote_addr TEXT              -- the peer's `ip:port`, if known
);

-- No other index: each would be written on every audited request. Reads seek by id and filter a bounded number
-- of rows per page; retention deletes from the lowest ids (see `src/audit/query.rs`, `src/audit/retention.rs`).
