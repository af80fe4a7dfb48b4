-- Values bound to a lease (`PUT ?lease=`, src/crdt/lease.rs, `Entry::lease`): the lease id, a nonzero u64
-- bit-cast to i64 as in `kv` (see 0001_init.sql). NULL for a value bound to none, which is every row written
-- before this migration (a nullable column with no default is added without rewriting a row). The compaction
-- upsert compares it last, like `Entry::precedence`.
ALTER TABLE kv ADD COLUMN lease INTEGER;
ALTER TABLE log ADD COLUMN lease INTEGER;
