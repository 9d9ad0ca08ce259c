-- Appends a batch to log_requests; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO log_requests BY NAME SELECT * FROM batch_rows;
