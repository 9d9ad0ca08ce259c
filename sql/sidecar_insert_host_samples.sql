-- Appends a batch to host_samples; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO host_samples BY NAME SELECT * FROM batch_rows;
