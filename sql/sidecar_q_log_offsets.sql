-- Where incremental log ingestion stopped, one row per log file path.
SELECT path, inode, size, offset_bytes, head_hash, updated_at FROM log_offsets ORDER BY path;
