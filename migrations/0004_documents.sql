-- Document values (src/crdt/doc/mod.rs): an entry can hold an Automerge document. `value` then holds its saved
-- bytes (sealed for a secret), and these columns what the entry says about it in the clear. All NULL for an LWW
-- value or a tombstone, which is every row written before this migration: nullable columns with no default
-- are added without rewriting a single row.
--
-- `doc_hlc`/`doc_node` are the version that created the document (its epoch), `doc_changes` the number of its
-- changes, `doc_heads` a hash of its heads; all u64s bit-cast to i64 as in `kv` (see 0001_init.sql). The
-- compaction upsert orders rows by the epoch before the version, exactly like `Entry::precedence`.
ALTER TABLE kv ADD COLUMN doc_hlc INTEGER;
ALTER TABLE kv ADD COLUMN doc_node INTEGER;
ALTER TABLE kv ADD COLUMN doc_changes INTEGER;
ALTER TABLE kv ADD COLUMN doc_heads INTEGER;
ALTER TABLE log ADD COLUMN doc_hlc INTEGER;
ALTER TABLE log ADD COLUMN doc_node INTEGER;
ALTER TABLE log ADD COLUMN doc_changes INTEGER;
ALTER TABLE log ADD COLUMN doc_heads INTEGER;
