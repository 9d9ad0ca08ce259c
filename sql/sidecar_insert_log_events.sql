-- Appends a batch to log_events; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO log_events BY NAME SELECT * FROM batch_rows;
