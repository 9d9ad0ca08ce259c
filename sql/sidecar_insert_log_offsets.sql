-- Upserts the ingestion offset of each log file; batch_rows has every column.
INSERT INTO log_offsets BY NAME SELECT * FROM batch_rows
ON CONFLICT (path) DO UPDATE SET
    inode = EXCLUDED.inode, size = EXCLUDED.size, offset_bytes = EXCLUDED.offset_bytes,
    head_hash = EXCLUDED.head_hash, updated_at = EXCLUDED.updated_at;
