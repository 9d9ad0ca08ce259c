-- Appends a batch to runner_samples; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO runner_samples BY NAME SELECT * FROM batch_rows;
