-- Receipts kept in parts (docs/receipts.md). A receipt is its batch's JWS, its claims and their
-- Merkle path; the claims are mostly the usage record itself, so a record now keeps only what
-- they cannot be rebuilt from (the path, the body's SHA-256, the upstream's response id) and
-- names its batch, whose JWS is stored once in receipt_batches: about a fifth of a whole
-- receipt per row. `receipt` still holds the whole receipts of rows written before.
ALTER TABLE usage_records ADD COLUMN receipt_batch TEXT;
ALTER TABLE usage_records ADD COLUMN receipt_path TEXT;
ALTER TABLE usage_records ADD COLUMN response_sha256 TEXT;
ALTER TABLE usage_records ADD COLUMN upstream_response_id TEXT;
-- One signed batch: `id` is its JWS's signature (base64url), which names it.
CREATE TABLE receipt_batches (
    id TEXT PRIMARY KEY,
    jws TEXT NOT NULL
);
