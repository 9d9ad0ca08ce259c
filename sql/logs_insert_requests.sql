-- Appends parsed log rows to log_requests in bulk (oasis_ops.logs.ingest); logs_batch_requests is an Arrow
-- table registered on the connection, columns named like the table's (missing ones stay NULL).
INSERT INTO log_requests BY NAME SELECT * FROM logs_batch_requests;
