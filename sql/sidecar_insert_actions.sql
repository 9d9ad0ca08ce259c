-- Appends a batch to actions; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO actions BY NAME SELECT * FROM batch_rows;
