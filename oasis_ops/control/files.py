"""The control directory and its two JSON files: location, safety checks, atomic writes.

Both sides write with temp file (same directory) + fsync + os.replace, so a reader sees either
the old or the new file, never a torn one. A file that still does not parse (someone else wrote
junk) is treated as absent with a note, never a crash.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oasis_ops.errors import ConfigError, UsageError
from oasis_ops.settings import Settings

CONTROL_FILE = "control.json"
STATE_FILE = "state.json"
REQUEST_LOCK_FILE = ".control.lock"


def utc_now() -> datetime:
    return datetime.now(UTC)


def control_dir_for(trial_db_path: str | os.PathLike[str] | None, settings: Settings | None = None) -> Path:
    """`settings.control_dir` when set, else `<stem>.control/` beside the trial DB."""
    configured = getattr(settings, "control_dir", "") if settings is not None else ""
    if configured:
        return Path(configured).expanduser()
    if not trial_db_path:
        raise UsageError("no trial database given, so no default control directory; set `control_dir` or `db`")
    trial = Path(trial_db_path).expanduser()
    return trial.with_name(trial.stem + ".control")


def check_control_dir(path: Path) -> None:
    """Refuse a control directory another user could tamper with."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot inspect control directory {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"control directory {path} exists but is not a directory")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"control directory {path} is owned by uid {info.st_uid}, not by us (uid {os.getuid()}); refusing it"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"control directory {path} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); refusing it",
            hint=f"chmod 700 {path}",
        )


def ensure_control_dir(path: str | os.PathLike[str]) -> Path:
    """Create the directory with mode 0700 if needed, then check it is safely ours."""
    directory = Path(path).expanduser()
    if not directory.exists():
        if not directory.parent.is_dir():
            raise ConfigError(f"cannot create control directory {directory}: {directory.parent} does not exist")
        try:
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # another process won the race; it is checked below like any existing one
        except OSError as exc:
            raise ConfigError(f"cannot create control directory {directory}: {exc.strerror or exc}") from None
    check_control_dir(directory)
    return directory


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to `path` atomically: temp file in the same directory, fsync, os.replace."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(data, None); (None, None) when absent; (None, note) when unreadable or not an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path} cannot be read ({exc}); treated as absent"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"{path} is not valid JSON ({exc}); treated as absent"
    except RecursionError:
        return None, f"{path} is nested too deeply to read; treated as absent"
    if not isinstance(data, dict):
        return None, f"{path} does not hold a JSON object; treated as absent"
    return data, None


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string (naive = UTC) or epoch seconds -> aware UTC datetime; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00:00+05:00 is before year 1 in UTC
            return None
    return None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_float(value: Any) -> float | None:
    """A finite number as float; anything else (bool, NaN, inf, text, a huge int) -> None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None
