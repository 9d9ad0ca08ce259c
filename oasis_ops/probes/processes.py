"""`ollama serve` and its runner children, from a process list passed in as an argument.

A process list is any callable returning ProcessRecord objects; `PsutilProcesses` is the real
one (it keeps a per-(pid, create_time) psutil.Process cache, because cpu_percent needs two
calls). Tests feed records directly or run real children.

What counts as a runner (every variant of reference/ollama.md), judged on argv only:
- `<dir>/ollama runner [--ollama-engine|--mlx-engine] --model X ... --port P`: argv[0]'s
  basename is `ollama` and the subcommand `runner` comes directly after it;
- `<dir>/ollama_llama_server --model X ...` (<= 0.5.1) and `<dir>/llama-server --model X ...`
  (>= 0.30): argv[0]'s basename is the runner executable.
No `--model`: a short-lived GPU-discovery runner, listed separately and never mapped.
Text that merely contains "ollama runner" (`grep ollama runner`, `python -c "..." ollama
runner`) is not a runner: argv[0] decides.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from oasis_ops.errors import ProcessRefused, ProcessVanished

OLLAMA_EXECUTABLES = frozenset({"ollama", "ollama.exe"})
RUNNER_EXECUTABLES = frozenset(
    {"ollama_llama_server", "ollama_llama_server.exe", "llama-server", "llama-server.exe"}
)
FLASH_VALUES = frozenset({"on", "off", "auto"})


@dataclass(frozen=True)
class ProcessRecord:
    """What we need to know about one process. Metrics are None when not measured or not
    readable (cpu_percent is None on the first look at a process)."""

    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    create_time: float
    username: str | None = None
    rss_bytes: int | None = None
    cpu_percent: float | None = None
    num_threads: int | None = None
    environ: Mapping[str, str] | None = None


ProcessList = Callable[[], Iterable[ProcessRecord]]


def _basename(arg: str) -> str:
    return arg.replace("\\", "/").rsplit("/", 1)[-1]


def _is_ollama_like(cmdline: tuple[str, ...] | list[str], name: str) -> bool:
    if cmdline:
        base = _basename(cmdline[0])
        return base in OLLAMA_EXECUTABLES or base in RUNNER_EXECUTABLES
    return name in OLLAMA_EXECUTABLES or name.startswith("ollama_llama_se") or name == "llama-server"


class PsutilProcesses:
    """The real process list. Call it like a function.

    Metrics (RSS, CPU %, threads, environ) are read only for ollama / runner executables.
    `only_ollama=True` (the default, for the sampler) also skips every other process after
    reading its argv: ~3 ms instead of ~10 ms for 80 processes here. A kill verification
    (`verify_runner`) should get the full list (`only_ollama=False`) so that a PID that is
    not an Ollama process is refused as such rather than reported as vanished.
    """

    def __init__(self, *, with_environ: bool = True, only_ollama: bool = True) -> None:
        self.with_environ = with_environ
        self.only_ollama = only_ollama
        self._cache: dict[tuple[int, float], psutil.Process] = {}

    def __call__(self) -> list[ProcessRecord]:
        records: list[ProcessRecord] = []
        seen: set[tuple[int, float]] = set()
        cheap = ["pid", "name", "cmdline"]
        full = ["ppid", "create_time", "username"]
        attrs = cheap if self.only_ollama else cheap + full
        for proc in psutil.process_iter(attrs=attrs):
            info = proc.info
            cmdline = tuple(info.get("cmdline") or ())
            name = info.get("name") or ""
            interesting = _is_ollama_like(cmdline, name)
            if self.only_ollama:
                if not interesting:
                    continue
                try:
                    with proc.oneshot():
                        info.update(ppid=proc.ppid(), create_time=proc.create_time(), username=proc.username())
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    continue
                except (psutil.AccessDenied, OSError):
                    pass
            record = ProcessRecord(
                pid=int(info["pid"]),
                ppid=int(info.get("ppid") or 0),
                name=name,
                cmdline=cmdline,
                create_time=float(info.get("create_time") or 0.0),
                username=info.get("username"),
            )
            if interesting:
                key = (record.pid, record.create_time)
                seen.add(key)
                record = self._measure(record, key)
            records.append(record)
        for key in list(self._cache):  # bounded: only processes still alive and interesting
            if key not in seen:
                del self._cache[key]
        return records

    def _measure(self, record: ProcessRecord, key: tuple[int, float]) -> ProcessRecord:
        first_look = key not in self._cache
        try:
            proc = self._cache.get(key) or psutil.Process(record.pid)
            self._cache[key] = proc
            with proc.oneshot():
                cpu = proc.cpu_percent(interval=None)
                rss = proc.memory_info().rss
                threads = proc.num_threads()
            environ: Mapping[str, str] | None = None
            if self.with_environ:
                try:
                    environ = proc.environ() or None  # empty on macOS since Big Sur: unknown
                except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                    environ = None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            self._cache.pop(key, None)
            return record
        return replace(
            record,
            rss_bytes=int(rss),
            cpu_percent=None if first_look else float(cpu),
            num_threads=int(threads),
            environ=environ,
        )


# --- command lines ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunnerCommand:
    """A parsed runner command line."""

    variant: str  # "ollama_llama_server" | "ollama runner" | "llama-server" | "mlx"
    model: str | None  # --model value: a blob path, or a model name for the MLX engine
    port: int | None
    flash_attn: str | None  # "on" | "off" | "auto" | None (not given)
    engine: str | None  # "ollama-engine" | "mlx-engine" | None

    @property
    def is_discovery(self) -> bool:
        return self.model is None


def _flag_value(args: list[str], *names: str) -> tuple[bool, str | None]:
    """(present, value) of the first of `names`, as `--x v` or `--x=v`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name:
                value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else None
                return True, value
            if arg.startswith(name + "="):
                return True, arg[len(name) + 1 :]
    return False, None


def parse_runner_cmdline(cmdline: Iterable[str]) -> RunnerCommand | None:
    """RunnerCommand when argv is a runner of any known variant, else None."""
    argv = list(cmdline)
    if not argv:
        return None
    exe = _basename(argv[0])
    engine: str | None
    if exe in OLLAMA_EXECUTABLES:
        if len(argv) < 2 or argv[1] != "runner":
            return None
        args = argv[2:]
        if "--mlx-engine" in args:
            variant, engine = "mlx", "mlx-engine"
        else:
            variant = "ollama runner"
            engine = "ollama-engine" if "--ollama-engine" in args else None
    elif exe in RUNNER_EXECUTABLES:
        args = argv[1:]
        variant = "llama-server" if exe.startswith("llama-server") else "ollama_llama_server"
        engine = None
    else:
        return None
    _, model = _flag_value(args, "--model", "-m")
    _, port_text = _flag_value(args, "--port")
    present, flash_text = _flag_value(args, "--flash-attn", "-fa")
    flash: str | None = None
    if present:
        # old runners took a bare boolean flag; >= 0.30 passes on/off/auto
        if flash_text is None:
            flash = "on"
        elif flash_text.lower() in FLASH_VALUES:
            flash = flash_text.lower()
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        port = None
    return RunnerCommand(variant=variant, model=model or None, port=port, flash_attn=flash, engine=engine)


def is_serve_cmdline(cmdline: Iterable[str]) -> bool:
    """argv is `<dir>/ollama serve ...`."""
    argv = list(cmdline)
    return len(argv) >= 2 and _basename(argv[0]) in OLLAMA_EXECUTABLES and argv[1] == "serve"


# --- the tree ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunnerProcess:
    record: ProcessRecord
    command: RunnerCommand

    @property
    def pid(self) -> int:
        return self.record.pid


@dataclass
class OllamaTree:
    """The current `ollama serve` and its children, sorted newest first."""

    serve: ProcessRecord | None
    runners: list[RunnerProcess] = field(default_factory=list)  # with --model
    discovery_runners: list[RunnerProcess] = field(default_factory=list)  # without --model
    stray_runners: list[RunnerProcess] = field(default_factory=list)  # runners of no current serve
    notes: list[str] = field(default_factory=list)


def find_ollama_tree(records: Iterable[ProcessRecord], serve_pid: int | None = None) -> OllamaTree:
    """The current `ollama serve` (pid `serve_pid`: the one listening on the Ollama port, see
    serve_pid_for) and its runner children. With no `serve_pid` there is no current serve, never
    a guess: "the only `ollama serve` on the machine" may listen on another port (another user's,
    a second install), and its environment or runners are not the ones we talk to."""
    all_records = list(records)
    runners_all = [
        RunnerProcess(r, cmd) for r in all_records if (cmd := parse_runner_cmdline(r.cmdline)) is not None
    ]
    notes: list[str] = []
    serve: ProcessRecord | None = None
    if serve_pid is not None:
        serve = next((r for r in all_records if r.pid == serve_pid and is_serve_cmdline(r.cmdline)), None)
        if serve is None:
            notes.append(f"pid {serve_pid} is not an `ollama serve` process")
    tree = OllamaTree(serve=serve, notes=notes)
    for rp in sorted(runners_all, key=lambda rp: rp.record.create_time, reverse=True):
        if serve is None or rp.record.ppid != serve.pid:
            tree.stray_runners.append(rp)
        elif rp.command.is_discovery:
            tree.discovery_runners.append(rp)
        else:
            tree.runners.append(rp)
    return tree


def _is_local(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_pid_for(url: str, records: Iterable[ProcessRecord]) -> int | None:
    """The `ollama serve` process listening on `url`'s port on this machine, or None (remote
    Ollama, not found, or not allowed to look). Several emulators or servers may run on one
    machine (tests, a second user): without this, runners would be matched by blob name across
    all of them, and the same model's blob has the same name everywhere."""
    parts = urlsplit(url)
    if not _is_local(parts.hostname) or parts.port is None:
        return None
    for record in records:
        if not is_serve_cmdline(record.cmdline):
            continue
        try:
            connections = psutil.Process(record.pid).net_connections(kind="inet")
        except (psutil.Error, OSError):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == parts.port for c in connections):
            return record.pid
    return None


# --- model -> blob ----------------------------------------------------------------------------
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"


def default_models_dir(value: str | None = None) -> Path:
    return Path(value).expanduser() if value else Path.home() / ".ollama" / "models"


def manifest_path(models_dir: str | os.PathLike[str], model: str) -> Path:
    """`gemma4:e4b` -> manifests/registry.ollama.ai/library/gemma4/e4b; `user/m` and
    `host/ns/m:tag` forms too; the tag defaults to `latest`."""
    name, tag = model, "latest"
    last = model.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = model.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", parts[0]]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return Path(models_dir, "manifests", *parts, tag)


def blob_from_manifest(models_dir: str | os.PathLike[str], model: str) -> str | None:
    """Weights blob path (blobs/sha256-<hex>) from the model's manifest, or None."""
    path = manifest_path(models_dir, model)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE:
            digest = str(layer.get("digest") or "")
            if digest.startswith("sha256:"):
                return str(Path(models_dir, "blobs", "sha256-" + digest.split(":", 1)[1]))
    return None


def blob_key(path_or_name: str) -> str:
    """Comparison key: the `sha256-<hex>` file name when it is a blob path (so symlinked or
    relocated model dirs still match), else the text itself."""
    base = _basename(path_or_name)
    if base.startswith("sha256-") or base.startswith("sha256:"):
        return "sha256-" + base[7:]
    return path_or_name


@dataclass(frozen=True)
class RunnerMatch:
    runner: RunnerProcess | None
    candidates: tuple[RunnerProcess, ...]
    note: str | None


def match_runner(tree: OllamaTree, blob_paths: Iterable[str], model_names: Iterable[str] = ()) -> RunnerMatch:
    """The runner whose --model is one of `blob_paths` (or, for MLX, one of `model_names`).
    Several: the newest child wins and the note says so."""
    keys = {blob_key(p) for p in blob_paths if p}
    names = {n for n in model_names if n}
    names |= {n[: -len(":latest")] for n in names if n.endswith(":latest")}
    found = tuple(
        rp
        for rp in tree.runners
        if rp.command.model is not None and (blob_key(rp.command.model) in keys or rp.command.model in names)
    )
    if not found:
        return RunnerMatch(None, (), None if keys or names else "no blob path known for this model")
    note = None
    if len(found) > 1:
        note = (
            f"{len(found)} runners serve this blob (pids {', '.join(str(r.pid) for r in found)}); "
            f"using the newest, pid {found[0].pid}"
        )
    return RunnerMatch(found[0], found, note)


# --- verification for a kill (issue 5) --------------------------------------------------------
def own_lineage(pid: int | None = None) -> set[int]:
    """Our own pid and all its ancestors: never a kill target."""
    pid = os.getpid() if pid is None else pid
    lineage = {pid}
    try:
        for parent in psutil.Process(pid).parents():
            lineage.add(parent.pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return lineage


def current_user() -> str | None:
    try:
        return str(psutil.Process().username())
    except (psutil.Error, OSError):
        return None


def verify_runner(
    records: Iterable[ProcessRecord],
    pid: int,
    create_time: float,
    *,
    serve_pid: int | None = None,
    expected_blob: str | None = None,
    protected: set[int] | None = None,
    own_user: str | None = None,
) -> RunnerProcess:
    """Check that (pid, create_time) is still a runner child of the current `ollama serve`,
    owned by the serve's user and by ours (`own_user`, default: this process's user: an action
    never signals another user's process, even where it could), not our own process or an
    ancestor, and (when given) serving `expected_blob`. Returns it, or raises ProcessVanished /
    ProcessRefused with the reason."""
    all_records = list(records)
    record = next((r for r in all_records if r.pid == pid), None)
    if record is None:
        raise ProcessVanished(f"pid {pid} no longer exists")
    if abs(record.create_time - create_time) > 0.01:
        raise ProcessRefused(f"pid {pid} was reused: create time {record.create_time} != {create_time}")
    if pid in (protected if protected is not None else own_lineage()):
        raise ProcessRefused(f"pid {pid} is this process or one of its parents")
    command = parse_runner_cmdline(record.cmdline)
    if command is None:
        raise ProcessRefused(f"pid {pid} is not an Ollama runner: {' '.join(record.cmdline)[:120]}")
    if command.is_discovery:
        raise ProcessRefused(f"pid {pid} is a discovery runner (no --model)")
    tree = find_ollama_tree(all_records, serve_pid=serve_pid)
    if tree.serve is None:
        raise ProcessRefused("no `ollama serve` on this machine listens on the Ollama port: nothing to act on")
    if record.ppid != tree.serve.pid:
        raise ProcessRefused(f"pid {pid} is not a child of the current `ollama serve` (pid {tree.serve.pid})")
    if record.username and tree.serve.username and record.username != tree.serve.username:
        raise ProcessRefused(f"pid {pid} belongs to {record.username}, `ollama serve` to {tree.serve.username}")
    own_user = own_user if own_user is not None else current_user()
    if record.username and own_user and record.username != own_user:
        raise ProcessRefused(f"pid {pid} belongs to {record.username}, not to {own_user} (who runs oasis-ops): "
                             "actions only signal their own user's processes")  # fmt: skip
    if expected_blob and command.model and blob_key(command.model) != blob_key(expected_blob):
        raise ProcessRefused(f"pid {pid} serves {command.model}, not {expected_blob}")
    return RunnerProcess(record, command)


def records_from(items: Iterable[Mapping[str, Any] | ProcessRecord]) -> list[ProcessRecord]:
    """Dicts (pid, ppid, name, cmdline, create_time, ...) -> records; for tests and fixtures."""
    out = []
    for item in items:
        if isinstance(item, ProcessRecord):
            out.append(item)
            continue
        data = dict(item)
        data["cmdline"] = tuple(data.get("cmdline") or ())
        out.append(ProcessRecord(**data))
    return out
