"""Runner processes of the emulated `ollama serve`, and the llama.cpp server API spoken to them.

One `Runner` per loaded model: a child process started with its version profile's command line
(`argv.spawn`), whose output is copied line by line into server.log, which is reaped the moment
it exits (never a zombie), and which the scheduler pings (`GET /health`), asks for completions
(`POST /completion`, server-sent events, cancelled by closing the connection) and kills
(SIGKILL, then wait for the reap: what Ollama's unload does).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from oasis_ops.demo.ollama import argv as argv_mod
from oasis_ops.demo.ollama.home import InstalledModel
from oasis_ops.demo.ollama.runner_emulated import LOAD_MS_ENV
from oasis_ops.demo.ollama.runner_main import ENGINE_ENV, FLASH_ENV
from oasis_ops.errors import OasisOpsError

if TYPE_CHECKING:
    from oasis_ops.demo.ollama.server import Emulator

START_TIMEOUT_S = 60.0


class RunnerFailed(OasisOpsError):
    """A runner could not be started."""


class RunnerGone(Exception):
    """The runner closed the connection or died. `answered`: it had started its answer (Ollama
    then says "an error was encountered while running the model: unexpected EOF"), else the
    request failed before any response ("model runner has unexpectedly stopped, ...")."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runner:
    """One runner child process and its port."""

    def __init__(self, emulator: Emulator, model: InstalledModel, flash_attention: str) -> None:
        self.emulator = emulator
        self.model = model
        self.engine = model.info.engine
        self.flash_attention = flash_attention  # "on" | "off" | "auto": what this load was given
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.argv: list[str] = []
        self.exited = threading.Event()
        self.started_at = time.monotonic()
        self.last_control: dict[str, Any] | None = None
        self.stopped_by_fault = False  # SIGSTOPped by a demo fault (real engine)
        # Its VRAM on the demo's simulated GPU, set at load (None: no GPU presented, or the real
        # engine, which runs on the CPU); below the model's size, the rest is on the CPU.
        self.vram_bytes: int | None = None
        # Ollama's per-runner semaphore of OLLAMA_NUM_PARALLEL: requests beyond it wait here
        self.slots = threading.Semaphore(max(1, emulator.cfg.num_parallel))
        self.in_flight = 0
        self.waiting = 0
        self.answering = 0  # requests whose answer from the runner has begun (a kill now is "unexpected EOF")
        self.counts_lock = threading.Lock()

    # --- process ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    def exit_description(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is None:
            return "running"
        if code < 0:
            sig = signal.Signals(-code)
            names = {signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGSEGV: "segmentation fault"}
            return f"signal: {names.get(sig, sig.name.lower())}"
        return f"exit status {code}"

    def exit_signal(self) -> int:
        code = self.proc.returncode if self.proc else None
        return -code if code is not None and code < 0 else (code or 0)

    def spawn(self) -> None:
        """Start the child (not yet waiting for it to answer); logs the profile's start line."""
        emu = self.emulator
        profile = emu.profile
        self.port = free_port()
        self.argv = profile.runner_argv(emu.home, self.model, self.port, emu.cfg, self.flash_attention)
        env = dict(emu.child_env)
        env[ENGINE_ENV] = self.engine
        env[LOAD_MS_ENV] = str(emu.cfg.load_ms if self.engine == "emulated" else 0)
        env[FLASH_ENV] = self.flash_attention
        profile.log_runner_start(emu.log, self.model, self.argv, self.flash_attention)
        self.started_at = time.monotonic()
        try:
            self.proc = argv_mod.spawn(
                self.argv, "oasis_ops.demo.ollama.runner_main", interpreter=emu.home.interpreter, env=env,
                cwd=emu.home.launch_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            raise RunnerFailed(f"error starting runner: {exc}") from None
        threading.Thread(target=self._pump, args=(self.proc,), name=f"runner-out-{self.proc.pid}", daemon=True).start()
        threading.Thread(target=self._reap, args=(self.proc,), name=f"runner-wait-{self.proc.pid}", daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.emulator.log.raw(raw.decode("utf-8", errors="replace"))
        proc.stdout.close()

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()  # reaps at once: a killed runner never lingers as a zombie
        self.exited.set()

    def wait_until_running(self, cancelled: Callable[[], bool]) -> str | None:
        """Poll /health until the runner answers 200; None when up, else the error text."""
        self.emulator.profile.log_waiting(self.emulator.log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.exited.wait(0.05):
                return f"llama runner process has terminated: {self.exit_description()}"
            if cancelled():
                self.kill_and_reap()
                return "context canceled"
            try:
                if self.request("GET", "/health", None, timeout=1.0)[0] == 200:
                    self.emulator.profile.log_runner_started(self.emulator.log, time.monotonic() - self.started_at)
                    self.push_control(force=True)
                    return None
            except OSError:
                continue
        self.kill_and_reap()
        return "timed out waiting for llama runner to start"

    def ping(self, timeout: float) -> bool:
        """Ollama's Ping: False (and a WARN line) when the process is gone; else /health."""
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            self.emulator.profile.log_runner_gone(self.emulator.log, self.exit_signal(), self.exit_description(),
                                                  killed_by_signal=code is not None and code < 0)
            return False
        try:
            return self.request("GET", "/health", None, timeout=timeout)[0] == 200
        except OSError:
            return False

    def kill_and_reap(self, timeout_s: float | None = None) -> None:
        """SIGKILL and wait until reaped (forever by default, as Ollama waits)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.exited.wait(timeout_s)

    def send_signal(self, sig: int) -> bool:
        if not self.alive() or self.proc is None:
            return False
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def acquire_slot(self, client_gone: Callable[[], bool]) -> bool:
        """Wait for one of the runner's OLLAMA_NUM_PARALLEL slots; False (and Ollama's abort line)
        when the client leaves first."""
        with self.counts_lock:
            self.waiting += 1
        try:
            while not self.slots.acquire(timeout=0.1):
                if client_gone():
                    self.emulator.profile.log_abort_waiting(self.emulator.log)
                    return False
        finally:
            with self.counts_lock:
                self.waiting -= 1
        with self.counts_lock:
            self.in_flight += 1
        return True

    def release_slot(self) -> None:
        with self.counts_lock:
            self.in_flight -= 1
        self.slots.release()

    # --- the llama.cpp server API --------------------------------------------------------------
    def request(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
        """One request (Connection: close); (status, decoded JSON or text). Raises OSError."""
        payload = json.dumps(body).encode() if body is not None else b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
            sock.sendall(head + payload)
            reader = _HttpReader(sock)
            try:
                status, _headers = reader.head()
                data = b"".join(reader.body())
            except RunnerGone as exc:
                raise OSError(str(exc)) from None
        text = data.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text) if text.strip() else None
        except ValueError:
            return status, text

    @property
    def cpu_share(self) -> float:
        """The part of the model on the CPU after a VRAM spill at its load (0: all on the GPU)."""
        size = self.model.info.size
        if self.vram_bytes is None or size <= 0:
            return 0.0
        return max(0.0, 1.0 - self.vram_bytes / size)

    def push_control(self, force: bool = False) -> None:
        """Live fault state for the emulated engine (the real one is faulted with signals)."""
        if self.engine != "emulated" or not self.alive():
            return
        control = self.emulator.board.runner_control(self.flash_attention == "on", self.cpu_share)
        if control == self.last_control and not force:
            return
        with contextlib.suppress(OSError):
            self.request("POST", "/control", control, timeout=5.0)
            self.last_control = control

    def apply_template(self, messages: list[dict[str, Any]]) -> str:
        status, data = self.request("POST", "/apply-template", {"messages": messages}, timeout=10.0)
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise RunnerGone(f"apply-template answered {status}")
        return str(data["prompt"])

    def completion(self, body: dict[str, Any], client_gone: Callable[[], bool]) -> Generator[dict[str, Any], None, None]:
        """Stream `/completion` events. Watches the client meanwhile: when it goes away the
        runner connection is closed (llama.cpp cancels the task) and ClientLeft is raised. A
        runner that dies or closes mid-answer raises RunnerGone."""
        payload = json.dumps({**body, "stream": True}).encode()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5.0)
        except OSError as exc:
            raise RunnerGone(str(exc)) from None
        with sock:
            sock.settimeout(None)
            try:
                sock.sendall((f"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                              f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload)
            except OSError as exc:
                raise RunnerGone(str(exc)) from None
            reader = _HttpReader(sock, client_gone=client_gone)
            status, _headers = reader.head()
            if status != 200:
                raise RunnerGone(f"runner answered {status}: {b''.join(reader.body())[:200]!r}")
            with self.counts_lock:
                self.answering += 1
            try:
                yield from _events(reader)
            finally:
                with self.counts_lock:
                    self.answering -= 1


def _events(reader: _HttpReader) -> Generator[dict[str, Any], None, None]:
    """Server-sent events of a started answer, up to the one with `stop`; a runner that dies or
    closes before that raises RunnerGone(answered=True)."""
    pending = b""
    try:
        for chunk in reader.body():
            pending += chunk
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: "):
                        continue
                    try:
                        item = json.loads(line[6:])
                    except ValueError:
                        continue
                    if isinstance(item, dict):
                        yield item
                        if item.get("stop"):
                            return
    except RunnerGone as exc:
        raise RunnerGone(str(exc), answered=True) from None
    raise RunnerGone("unexpected EOF", answered=True)


class ClientLeft(Exception):
    """The API client closed its connection while we waited on the runner."""


class _HttpReader:
    """A minimal HTTP/1.1 response reader over a socket (chunked or to EOF) that can watch a
    second socket (the API client) while it waits."""

    def __init__(self, sock: socket.socket, client_gone: Callable[[], bool] | None = None) -> None:
        self.sock = sock
        self.client_gone = client_gone
        self.client_checked = time.monotonic()
        self.buffer = b""
        self.chunked = False
        self.length: int | None = None

    def _recv(self) -> bytes:
        while True:
            if self.client_gone is not None:
                readable, _, _ = select.select([self.sock], [], [], 0.25)
                # asked also while the runner streams without a pause: a real runner's tokens
                # come faster than 0.25 s apart, and Ollama cancels on a client that left anyway
                now = time.monotonic()
                if not readable or now - self.client_checked >= 0.25:
                    self.client_checked = now
                    if self.client_gone():
                        raise ClientLeft
                    if not readable:
                        continue
            try:
                return self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:
                raise RunnerGone(str(exc)) from None

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            data = self._recv()
            if not data:
                raise RunnerGone("the runner closed the connection without answering")
            self.buffer += data
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise RunnerGone(f"bad status line from the runner: {lines[0][:80]!r}") from None
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if "content-length" in headers and headers["content-length"].isdigit():
            self.length = int(headers["content-length"])
        return status, headers

    def body(self) -> Generator[bytes, None, None]:
        if not self.chunked:
            remaining = self.length
            if self.buffer:
                piece = self.buffer if remaining is None else self.buffer[:remaining]
                self.buffer = b""
                if remaining is not None:
                    remaining -= len(piece)
                yield piece
            while remaining is None or remaining > 0:
                data = self._recv()
                if not data:
                    return
                if remaining is not None:
                    data = data[:remaining]
                    remaining -= len(data)
                yield data
            return
        while True:
            while b"\r\n" not in self.buffer:
                data = self._recv()
                if not data:
                    return
                self.buffer += data
            size_line, self.buffer = self.buffer.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                raise RunnerGone("bad chunk from the runner") from None
            if size == 0:
                return
            while len(self.buffer) < size + 2:
                data = self._recv()
                if not data:
                    return
                self.buffer += data
            piece, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
            yield piece
