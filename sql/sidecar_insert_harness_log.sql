-- Appends a batch to harness_log; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO harness_log BY NAME SELECT * FROM batch_rows;
