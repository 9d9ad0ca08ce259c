"""Start a Python child whose process command line is exactly the argv a real Ollama would use.

The console tells runners apart by their argv (`/proc/<pid>/cmdline`): `<dir>/ollama runner
--ollama-engine --model <blob> --port N` for 0.20-era Ollama, `<dir>/llama-server --model <blob>
--port N ...` from 0.30. A Python program cannot be exec'd with such an argv (the interpreter
would read `--model` as one of its own options), so the child is started as

    argv = [<wanted argv[0]>, "-c", "<bootstrap code, padded>"]    (executable: this interpreter)

with the padding chosen so that those strings take exactly as many bytes as the wanted argv.
The child then writes the wanted argv over its own argument area (Linux: the addresses are
fields 48-49 of /proc/self/stat) and sets its name (`comm`, what `ps` and psutil's `name()`
show) with prctl(PR_SET_NAME). From then on `/proc/<pid>/cmdline`, `ps` and psutil show the
wanted command line; `/proc/<pid>/exe` still names the interpreter, as it says the truth.

Only Linux is supported (the fields and prctl are Linux's); elsewhere the child keeps the
interpreter's argv and the console reports the runner as not matched.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from oasis_ops.errors import UsageError

ARGV_ENV = "OASIS_CHILD_ARGV"
PR_SET_NAME = 15
_BOOTSTRAP = "from oasis_ops.demo.ollama.argv import bootstrap as b;b({module!r})"


def _area(argv: Sequence[str]) -> int:
    """Bytes the kernel's argument area takes for argv (each string plus its NUL)."""
    return sum(len(a.encode()) + 1 for a in argv)


def child_argv(wanted: Sequence[str], module: str) -> list[str]:
    """[argv0, "-c", code] taking exactly as many bytes as `wanted` (raises if it cannot)."""
    code = _BOOTSTRAP.format(module=module)
    head = [wanted[0], "-c"]
    pad = _area(wanted) - _area(head) - (len(code.encode()) + 1)
    if pad < 0:
        raise UsageError(f"runner command line too short to carry the bootstrap ({-pad} bytes missing)")
    if pad:
        code += "#" + "x" * (pad - 1)  # a comment: Python ignores it
    return [*head, code]


def spawn(
    wanted: Sequence[str],
    module: str,
    *,
    interpreter: str,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Popen of `module`'s `main()` in a child whose command line will read as `wanted`."""
    child_env = dict(env)
    child_env[ARGV_ENV] = json.dumps(list(wanted))
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        child_argv(wanted, module), executable=interpreter, env=child_env, cwd=cwd, **popen
    )


def rewrite_own_argv(wanted: Sequence[str], proc_root: str = "/proc") -> bool:
    """Write `wanted` over this process's argument area and name; False when not possible."""
    try:
        stat = Path(proc_root, "self", "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        arg_start, arg_end = int(fields[48 - 3]), int(fields[49 - 3])  # fields 48, 49 (1-based)
    except (OSError, ValueError, IndexError):
        return False
    data = b"\0".join(a.encode() for a in wanted) + b"\0"
    if arg_start <= 0 or len(data) != arg_end - arg_start:
        return False
    ctypes.memmove(arg_start, data, len(data))
    name = os.path.basename(wanted[0]).encode()[:15]
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    return True


def wanted_argv() -> list[str]:
    """The argv this child was started to have (from the environment)."""
    raw = os.environ.get(ARGV_ENV)
    if not raw:
        raise UsageError(f"{ARGV_ENV} is not set: start this program through oasis_ops.demo.ollama.argv.spawn")
    argv = json.loads(raw)
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError(f"{ARGV_ENV} must be a JSON list of strings")
    return argv


def bootstrap(module: str) -> None:
    """Child side: take the wanted argv, show it as our own, run `module.main(argv[1:])`."""
    import importlib

    argv = wanted_argv()
    if sys.platform.startswith("linux"):
        rewrite_own_argv(argv)
    sys.argv = list(argv)
    code = importlib.import_module(module).main(argv[1:])
    raise SystemExit(code)
