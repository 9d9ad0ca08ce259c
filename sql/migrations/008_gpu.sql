-- Sidecar migration 008 (issue 16): GPU memory beside host memory.
-- NOTE: a migration file may hold several DDL statements: the one allowed exception to "one
-- named statement per file"; applied with its schema_version row in one transaction.
--
-- gpu_samples: one row per GPU per read (the sampler reads GPUs every process_interval_s, less
-- often on a machine without one). source: nvml, nvidia-smi or rocm-smi. vendor: nvidia or amd.
-- (gpu_index, gpu_uuid) name the device; memory in bytes; utilization_percent is the GPU's busy
-- share over the driver's last sample period (0-100); NULL is "not reported", never zero.
CREATE TABLE gpu_samples (
    ts TIMESTAMPTZ NOT NULL,
    gpu_index INTEGER,
    gpu_uuid VARCHAR,
    name VARCHAR,
    vendor VARCHAR,
    memory_total_bytes BIGINT,
    memory_used_bytes BIGINT,
    memory_free_bytes BIGINT,
    utilization_percent DOUBLE,
    temperature_c DOUBLE,
    power_w DOUBLE,
    source VARCHAR
);
-- model_samples.runner_vram_bytes: VRAM the model's runner process holds on all GPUs (NVML's
-- or nvidia-smi's per-process figure); NULL where no GPU reports it (a Mac: unified memory).
ALTER TABLE model_samples ADD COLUMN runner_vram_bytes BIGINT;
