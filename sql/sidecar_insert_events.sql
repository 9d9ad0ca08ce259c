-- Appends a batch to events; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO events BY NAME SELECT * FROM batch_rows;
