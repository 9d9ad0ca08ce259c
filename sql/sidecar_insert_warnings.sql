-- Appends a batch to warnings; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO warnings BY NAME SELECT * FROM batch_rows;
