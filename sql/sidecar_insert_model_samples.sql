-- Appends a batch to model_samples; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO model_samples BY NAME SELECT * FROM batch_rows;
