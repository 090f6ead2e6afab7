-- Usage records page by `seq` alone (postgres/usage.rs). Until now a reader showed only rows
-- whose writing transaction id was below its snapshot's xmin, and that horizon is the whole
-- PostgreSQL server's: any open transaction in any database (a pg_dump, a slow migration, an
-- idle-in-transaction session) held back every account's newest records from /v1/usage. Now
-- every usage batch takes one advisory lock before it draws its numbers, so `seq` follows
-- commit order and no horizon is needed.
--
-- Upgrading: a listing cursor kept across the upgrade pages by `seq` from its record on; rows
-- written before it were numbered in their batch's order, not strictly in commit order, so
-- such a cursor may list a record of the last moments before the upgrade twice or not at all.
ALTER TABLE usage_records DROP COLUMN txid;
CREATE INDEX usage_records_account_seq ON usage_records (account_id, seq);
CREATE INDEX usage_records_key_seq ON usage_records (key_id, seq);
-- One value at a time (the default, said here because the order depends on it): a session
-- that cached a block of values would draw numbers outside the lock's order.
ALTER SEQUENCE usage_records_seq CACHE 1;
