-- Expiring values (`PUT ?ttl=`, src/crdt/mod.rs `Entry::expires`): the hybrid-clock timestamp from which an
-- entry reads as absent, a u64 bit-cast to i64 as in `kv` (see 0001_init.sql). NULL for a permanent value,
-- which is every row written before this migration: a nullable column with no default is added without
-- rewriting a row. The compaction upsert compares it last, like `Entry::precedence`.
ALTER TABLE kv ADD COLUMN expires INTEGER;
ALTER TABLE log ADD COLUMN expires INTEGER;
