-- Appends parsed log rows to harness_log in bulk (oasis_ops.logs.ingest); logs_batch_harness is an Arrow
-- table registered on the connection, columns named like the table's (missing ones stay NULL).
INSERT INTO harness_log BY NAME SELECT * FROM logs_batch_harness;
