-- Attempts of a request on other routes of its model that failed before one served (or before
-- it failed for good): a JSON array of {route, error, status, latency_us}; NULL when the first
-- attempt was the last, the usual case. They are not billed. PostgreSQL has the same column.
ALTER TABLE usage_records ADD COLUMN failed_attempts TEXT;
