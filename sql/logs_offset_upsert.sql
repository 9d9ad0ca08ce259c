-- Records where ingestion of one log file stopped (upsert by path).
INSERT INTO log_offsets (path, inode, size, offset_bytes, head_hash, updated_at)
VALUES ($path, $inode, $size, $offset_bytes, $head_hash, $updated_at)
ON CONFLICT (path) DO UPDATE SET
    inode = EXCLUDED.inode, size = EXCLUDED.size, offset_bytes = EXCLUDED.offset_bytes,
    head_hash = EXCLUDED.head_hash, updated_at = EXCLUDED.updated_at;
