-- The stored ingestion offset of one log path (compare-and-set check inside the write transaction).
SELECT path, inode, size, offset_bytes, head_hash FROM log_offsets WHERE path = $path;
