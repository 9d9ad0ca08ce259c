-- sidecar_insert_gpu_samples: appends a batch to gpu_samples; batch_rows is the Arrow table registered by Sidecar.write_batch.
INSERT INTO gpu_samples BY NAME SELECT * FROM batch_rows;
