-- Appends parsed log rows to log_timings in bulk (oasis_ops.logs.ingest); logs_batch_timings is an Arrow
-- table registered on the connection, columns named like the table's (missing ones stay NULL).
INSERT INTO log_timings BY NAME SELECT * FROM logs_batch_timings;
