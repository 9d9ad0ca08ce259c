-- Every stored ingestion offset (one row per log path); read once before an ingest plans its files.
SELECT path, inode, size, offset_bytes, head_hash FROM log_offsets ORDER BY path;
