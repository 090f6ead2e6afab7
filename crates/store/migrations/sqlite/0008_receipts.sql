-- Signed receipts (docs/receipts.md). A response's receipt, a compact JWS of its metadata and
-- the SHA-256 of its body (never a body), kept with its usage record for
-- GET /v1/requests/{id}/receipt; NULL for a refusal or a dialect endpoint.
ALTER TABLE usage_records ADD COLUMN receipt TEXT;
-- The public keys receipts are signed with, as JWKs, published by every node at start so the
-- JWKS any node serves names every node's keys, current and retired. PostgreSQL has the same.
CREATE TABLE receipt_keys (
    kid TEXT PRIMARY KEY,
    jwk TEXT NOT NULL,
    published_at_us BIGINT NOT NULL
);
