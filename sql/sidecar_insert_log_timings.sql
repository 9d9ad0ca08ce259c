-- Appends a batch to log_timings; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO log_timings BY NAME SELECT * FROM batch_rows;
