"""Settings: one declared list, resolved in layers.

Order (later wins): the defaults below, then a TOML file (`--config`, else `OASIS_OPS_CONFIG`,
else `./oasis-ops.toml` when it exists), then environment variables (`OASIS_OPS_<NAME>`, plus
`OLLAMA_HOST` / `OLLAMA_MODELS` the way Ollama itself reads them), then command-line flags.

Every setting is documented in the README; `tests/test_settings.py` fails when one is not.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oasis_ops.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type  # str, int, float, bool or list (of str)
    default: Any
    help: str
    env_aliases: tuple[str, ...] = ()  # extra variables read before OASIS_OPS_<NAME>

    @property
    def env(self) -> str:
        return "OASIS_OPS_" + self.name.upper()


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # --- where the data is
    S("db", str, "", "Trial database (DuckDB). Empty: the built-in demo."),
    S("sidecar", str, "", "Telemetry sidecar. Empty: `<db stem>.ops.duckdb` next to the trial DB."),
    S("control_dir", str, "", "Control directory. Empty: `<db stem>.control/` next to the trial DB."),
    S("snapshot_dir", str, "", "Where lock-free snapshots of the trial DB are kept. Empty: `~/.cache/oasis-ops/snapshots`."),
    S("max_staleness_s", float, 10.0, "Longest the shown data may lag the live trial DB, seconds."),
    S("snapshot_min_interval_s", float, 1.0, "Shortest time between two snapshot copies of a live DB, seconds."),
    # --- the trial table mapping (Contract 1)
    S("table", str, "trials", "Trial table name."),
    S("trial_id_column", str, "trial_id", "Trial id column (optional)."),
    S("run_id_column", str, "run_id", "Run id column (optional)."),
    S("model_column", str, "model", "Model column (optional)."),
    S("time_column", str, "started_at", "When the trial started (TIMESTAMP = UTC, or TIMESTAMPTZ)."),
    S("finished_column", str, "finished_at", "When the trial ended (optional; with time_column gives latency when latency_column is absent)."),
    S("latency_column", str, "latency_ms", "Latency in milliseconds (optional if finished_column exists)."),
    S("status_column", str, "status", "Status column."),
    S("error_column", str, "error", "Error text column (optional)."),
    S("ok_words", list, ["ok"], "Status values that mean success."),
    S("timeout_words", list, ["timeout"], "Status values that mean a timeout."),
    S("error_words", list, ["error"], "Status values that mean an error (any other value also counts as an error)."),
    # --- DuckDB resource limits for every connection we open
    S("duckdb_memory_limit", str, "64MB", "memory_limit of every DuckDB connection we open (small: the console runs beside a memory-starved run; a larger one only keeps more of the file cached)."),
    S("duckdb_threads", int, 2, "threads of every DuckDB connection we open."),
    # --- rollups and pages
    S("bucket", str, "1m", "Default rollup bucket (e.g. 1m, 5m, 1h)."),
    S("keep_demo_dirs", int, 3, "How many of the newest automatic demo directories (`demo-<time>` under the cache) `oasis-ops demo` keeps: older ones are removed when a new one starts, unless written to in the last 10 minutes (0 keeps all; a `--dir` is never removed)."),
    S("max_buckets", int, 200_000, "Most buckets one rollup materialises (timeline, pages, incidents, report): beyond it an automatic bucket gets coarser, an explicit one is refused (exit 2) naming a bucket that fits."),
    S("live_refresh_s", float, 5.0, "Live page header refresh period, seconds (0 turns it off)."),
    S("live_window_min", int, 30, "Live page chart window, minutes."),
    # --- dashboard server
    S("host", str, "127.0.0.1", "Address the dashboard binds to."),
    S("port", int, 8501, "Port the dashboard listens on."),
    S("access_secret", str, "", "Secret every dashboard session must enter first; required to bind off loopback (12+ characters). Environment or settings file only: there is no flag (`ps` shows command lines). Never printed."),
    S("allowed_hosts", list, [], "Host names the dashboard answers to when bound off loopback, besides IP addresses and this machine's own names (`*`: any). Against DNS rebinding."),
    # --- the recording proxy (`oasis-ops proxy`)
    S("proxy_listen", str, "127.0.0.1:11435", "Address the proxy listens on, HOST:PORT (the harness's OLLAMA_HOST). Off loopback only with an access secret."),
    S("proxy_upstream", str, "", "The Ollama the proxy forwards to. Empty: `ollama_host`."),
    S("run_id", str, "", "run_id of the trials the proxy and the litellm callback record. Empty: `proxy-<UTC start time>` (`litellm-...` for the callback)."),
    S("proxy_max_concurrency", int, 64, "Requests the proxy lets through at once until the control channel says otherwise (`oasis-ops concurrency`)."),
    S("proxy_max_queue", int, 1024, "Requests the proxy holds waiting at most; one more gets a 503 saying the queue is full."),
    S("proxy_max_body_mb", float, 64.0, "Largest request body of a model call the proxy accepts, MB (413 beyond); other requests (model uploads) stream through uncapped."),
    S("proxy_recovery_hold_s", float, 180.0, "Longest the proxy holds new requests for a hard-kill or recover in progress (and then for the runner to answer), seconds."),
    # --- the Prometheus exporter (`oasis-ops sample --prometheus`)
    S("prometheus_listen", str, "", "Address the sampler serves Prometheus metrics on, HOST:PORT (e.g. 127.0.0.1:9464); empty: no exporter. The dashboard's own sampler honours it too. Off loopback only with an access secret (scrapes then send `Authorization: Bearer <secret>`)."),
    S("metrics_host", str, "", "The `host` label of every exported series. Empty: this machine's name."),
    S("prometheus_url", str, "", "A Prometheus server to read other hosts' metrics from (the Live page's Hosts view), e.g. http://127.0.0.1:9090. Empty: this host only."),
    # --- Ollama
    S("ollama_host", str, "http://127.0.0.1:11434", "Ollama base URL (also read from OLLAMA_HOST).", ("OLLAMA_HOST",)),
    S("ollama_models", str, "", "Ollama's model store, for manifests (also OLLAMA_MODELS). Empty: `~/.ollama/models`.", ("OLLAMA_MODELS",)),
    S("ollama_timeout_s", float, 2.0, "Timeout of each Ollama API poll, seconds."),
    S("server_log", str, "", "Ollama server.log to tail and ingest. Empty: `~/.ollama/logs/server.log` when it exists."),
    S("log_utc_offset", str, "", "UTC offset of the naive local times in logs (Gin access lines, plain-logger lines, the harness log), e.g. +01:00. Empty: the offset the same file's slog lines state, else this machine's zone."),
    # --- sampler
    S("sample_interval_s", float, 1.0, "Host memory and /api/ps sampling period, seconds."),
    S("process_interval_s", float, 2.0, "Runner-process sampling period, seconds (also how often a llama-server runner's /slots and /metrics are read)."),
    S("runner_no_progress_s", float, 30.0, "A llama-server slot busy without a new token (or a runner not answering /slots) this long is a `runner_no_progress` (`runner_not_answering`) event, seconds."),
    S("sampler", bool, True, "Start the telemetry sampler with the dashboard server."),
    S("retain_full_h", float, 24.0, "Sidecar retention: samples older than this many hours are thinned to one per minute (host memory: the minute's least free memory)."),
    S("retain_days", float, 30.0, "Sidecar retention: samples older than this many days are deleted (events, actions and ingested logs are kept)."),
    # --- recovery and the watchdog
    S("evict_grace_s", float, 10.0, "How long a soft evict may stay Stopping before it counts as stuck."),
    S("control_ack_timeout_s", float, 10.0, "How long to wait for the runner to acknowledge a control change."),
    S("watchdog", bool, False, "Enable the watchdog (automatic recovery)."),
    S("watchdog_dry_run", bool, False, "Watchdog only logs what it would do."),
    S("watchdog_stopping_s", float, 30.0, "Hard-kill when a model is Stopping longer than this while trials are not completing."),
    S("watchdog_min_free_gb", float, 2.0, "Memory guard: act when free+reclaimable memory drops below this, GB."),
    S("watchdog_max_pressure", float, 60.0, "Memory guard: act when pressure (0-100) reaches this."),
    S("watchdog_guard_action", str, "concurrency", "Memory guard action: `concurrency` (lower to 1) or `pause`."),
    S("watchdog_guard_on_forecast", bool, False, "Memory guard: also act on an early warning of memory exhaustion (a forecast), before pressure or the free-memory floor is reached."),
    S("watchdog_restore_min", float, 5.0, "Restore concurrency after this many minutes of recovery."),
    S("watchdog_kill_interval_min", float, 10.0, "At most one automatic hard-kill per model within this many minutes."),
    # --- diagnosis
    S("incident_threshold_sigma", float, 6.0, "Incident windows: robust z-score (MAD) of p95 that counts as a departure."),
    S("incident_min_failure_rate", float, 0.2, "Incident windows: a minute with this failure rate or more is a departure."),
    # --- early warning
    S("warn_horizon_min", float, 60.0, "Early warning: warn of memory exhaustion forecast within this many minutes."),
    S("warn_memory_floor_gb", float, 1.0, "Early warning: free (+ reclaimable) memory at this many GB counts as exhausted."),
    S("warn_min_duration_s", float, 120.0, "Early warning: a condition must hold this long before its warning is raised."),
    S("warn_clear_s", float, 300.0, "Early warning: a warning clears once its condition has been gone this long."),
    S("warn_trial_lag_s", float, 60.0, "Early warning: a minute of trials is judged this long after it ends (the harness's timeout: its trials have all finished then)."),
    S("warn_latency_ratio", float, 1.5, "Early warning: latency drift when the recent p95 reaches this multiple of the run's own (and p50 half as far)."),
    S("notify_webhook_url", str, "", "Early warning: POST each raised and cleared warning as JSON to this URL (empty: off)."),
    S("notify_desktop", bool, False, "Early warning: show each raised and cleared warning as a desktop notification (notify-send, osascript)."),
    S("warn_backlog_ratio", float, 0.3, "Early warning: backlog when trials start at under this share of the run's pace while the runner stays busy."),
)
del S

_BY_NAME = {s.name: s for s in SETTINGS}
# The accepted range of every number (inclusive); NaN and infinities are never accepted.
# `tests/test_settings_ranges.py` fails when a numeric setting has none.
RANGES: dict[str, tuple[float, float]] = {
    "max_staleness_s": (0.1, 86_400),
    "snapshot_min_interval_s": (0, 3600),
    "duckdb_threads": (1, 64),
    "keep_demo_dirs": (0, 1000),
    "max_buckets": (10, 10_000_000),
    "live_refresh_s": (0, 3600),
    "live_window_min": (1, 10_080),
    "port": (1, 65_535),
    "ollama_timeout_s": (0.1, 600),
    "sample_interval_s": (0.01, 3600),
    "process_interval_s": (0, 3600),  # 0: every sample
    "runner_no_progress_s": (1, 86_400),
    "retain_full_h": (1, 8760),
    "retain_days": (1, 36_500),
    "evict_grace_s": (0, 3600),
    "control_ack_timeout_s": (0.1, 3600),
    "watchdog_stopping_s": (1, 86_400),
    "watchdog_min_free_gb": (0, 1_000_000),
    "watchdog_max_pressure": (0, 100),
    "watchdog_restore_min": (0, 10_080),
    "watchdog_kill_interval_min": (0, 10_080),
    "incident_threshold_sigma": (0.5, 1000),
    "incident_min_failure_rate": (0, 1),
    "warn_horizon_min": (1, 10_080),
    "warn_memory_floor_gb": (0, 1_000_000),
    "warn_min_duration_s": (0, 86_400),
    "warn_clear_s": (0, 86_400),
    "warn_trial_lag_s": (0, 86_400),
    "warn_latency_ratio": (1.01, 1000),
    "warn_backlog_ratio": (0, 1),
    "proxy_max_concurrency": (1, 100_000),
    "proxy_max_queue": (0, 1_000_000),
    "proxy_max_body_mb": (0.001, 4096),
    "proxy_recovery_hold_s": (0, 3600),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "watchdog_guard_action": ("concurrency", "pause"),
}
SECRET_SETTINGS = frozenset({"access_secret"})  # shown as "(set)" / "" by `oasis-ops settings`
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def _coerce(s: Setting, value: Any, origin: str) -> Any:
    try:
        if s.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if s.type is list:
            if isinstance(value, list):
                return [str(v) for v in value]
            return [part.strip() for part in str(value).split(",") if part.strip()]
        if s.type in (int, float) and isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        converted = s.type(value)
        if s.type in (int, float):
            low, high = RANGES[s.name]
            if not math.isfinite(converted) or not low <= converted <= high:
                raise ValueError(f"{value!r} is outside {low:g}..{high:g}")
        elif s.name in CHOICES and converted not in CHOICES[s.name]:
            raise ValueError(f"{value!r} is not one of {', '.join(CHOICES[s.name])}")
        return converted
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"setting {s.name} from {origin}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    """Resolved settings; attribute access by name, plus where each value came from."""

    values: Mapping[str, Any]
    origins: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **overrides: Any) -> Settings:
        values = dict(self.values)
        origins = dict(self.origins)
        for key, value in overrides.items():
            if key not in _BY_NAME:
                raise ConfigError(f"unknown setting {key!r}")
            values[key] = _coerce(_BY_NAME[key], value, "override")
            origins[key] = "override"
        return Settings(values, origins)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def _config_path(config: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if env.get("OASIS_OPS_CONFIG"):
        path = Path(env["OASIS_OPS_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"OASIS_OPS_CONFIG points at a missing file: {path}")
        return path
    local = Path("oasis-ops.toml")
    return local if local.is_file() else None


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then TOML, then environment, then flags (None values in flags are ignored)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    origins: dict[str, str] = {s.name: "default" for s in SETTINGS}

    path = _config_path(config, env)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        # Accept a flat file or one with an [oasis-ops] table.
        data = data.get("oasis-ops", data)
        for key, value in data.items():
            if key not in _BY_NAME:
                raise ConfigError(f"unknown setting {key!r} in {path}", hint="see the README's settings table")
            values[key] = _coerce(_BY_NAME[key], value, str(path))
            origins[key] = str(path)
        if any(data.get(name) for name in SECRET_SETTINGS) and os.name == "posix":
            mode = path.stat().st_mode
            if mode & 0o077:
                raise ConfigError(f"{path} holds the access secret but other users may read it (mode {mode & 0o777:o})",
                                  hint=f"chmod 600 {path}")  # fmt: skip

    for s in SETTINGS:
        for var in (*s.env_aliases, s.env):
            if var in env and env[var] != "":
                values[s.name] = _coerce(s, env[var], var)
                origins[s.name] = var

    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in _BY_NAME:
            raise ConfigError(f"unknown setting {key!r}")
        if key in SECRET_SETTINGS:  # `ps` shows every command line to every user
            raise ConfigError(f"{key} cannot be given on the command line", hint=f"set {_BY_NAME[key].env} or use the settings file")
        values[key] = _coerce(_BY_NAME[key], value, "command line")
        origins[key] = "command line"
    return Settings(values, origins)


def settings_markdown() -> str:
    """The README's settings table (kept in sync by a test)."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        envs = ", ".join(f"`{v}`" for v in (s.env, *s.env_aliases))
        default = ",".join(s.default) if isinstance(s.default, list) else s.default
        rows.append(f"| `{s.name}` | {envs} | `{default}` | {s.help} |")
    return "\n".join(rows)
