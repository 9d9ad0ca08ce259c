"""`oasis-ops proxy`: the recording, throttling proxy put together and served.

One process: uvicorn serving ProxyApp on the event loop; a TrialWriter thread writing the
trials (batched, retried on lock, never dropping a row); `RunnerControl` applying the control
channel (`oasis-ops concurrency 1`, `pause`, the watchdog and the memory guard) to the gate and
writing state.json with the proxy's queue; and a housekeeping thread that watches the control
directory's `recovery.json` (a hard-kill or recover in progress) and writes the audit rows.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oasis_ops.access import LoginGuard, check_bind, is_loopback_name, parse_listen
from oasis_ops.control import RunnerControl, control_dir_for
from oasis_ops.control.recovery import RecoveryMarker, read_recovery
from oasis_ops.errors import OasisOpsError, UsageError
from oasis_ops.probes.ollama import resolve_ollama_host
from oasis_ops.proxy.app import ProxyApp, ProxyConfig
from oasis_ops.proxy.gate import FairGate
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for
from oasis_ops.trials.writer import TrialWriter, default_run_id

log = logging.getLogger(__name__)


def _same_endpoint(upstream: str, host: str, port: int) -> bool:
    parts = urlsplit(upstream)
    up_host = (parts.hostname or "").lower()
    up_port = parts.port or (443 if parts.scheme == "https" else 80)
    if up_port != port:
        return False
    if up_host == host.lower() or (is_loopback_name(up_host) and is_loopback_name(host)):
        return True
    try:  # a proxy bound to every address also answers on loopback
        return ipaddress.ip_address(host.strip("[]")).is_unspecified and is_loopback_name(up_host)
    except ValueError:
        return False


@dataclass
class ProxyPlan:
    """Everything resolved and checked before anything starts."""

    upstream: str
    host: str
    port: int
    db: Path
    run_id: str
    control_dir: Path
    sidecar: Path


def plan_proxy(settings: Settings, *, db: str | None = None, upstream: str | None = None,
               listen: str | None = None, run_id: str | None = None) -> ProxyPlan:  # fmt: skip
    trial_db = db or settings.db
    if not trial_db:
        raise UsageError("the proxy needs a trial database to record into: pass --db trials.duckdb")
    path = Path(trial_db).expanduser()
    if not path.parent.is_dir():
        raise UsageError(f"cannot record into {path}: {path.parent} is not a directory")
    host, port = parse_listen(listen or settings.proxy_listen)
    check_bind(host, settings.access_secret)
    target = resolve_ollama_host(upstream or settings.proxy_upstream or settings.ollama_host)
    if _same_endpoint(target, host, port):
        raise UsageError(f"the upstream {target} is the proxy's own address {host}:{port}: it would forward to itself",
                         hint="OLLAMA_HOST is for the harness; give the proxy --upstream http://127.0.0.1:11434")  # fmt: skip
    return ProxyPlan(
        upstream=target, host=host, port=port, db=path,
        run_id=run_id or settings.run_id or default_run_id("proxy"),
        control_dir=control_dir_for(path, settings), sidecar=sidecar_path_for(path, settings),
    )  # fmt: skip


class Housekeeper(threading.Thread):
    """Watches recovery.json and writes the proxy's audit rows (off the event loop)."""

    def __init__(self, service: ProxyService, poll_s: float = 0.2) -> None:
        super().__init__(name="oasis-ops-proxy-housekeeper", daemon=True)
        self.service = service
        self.poll_s = poll_s
        self.audits: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        self.stop_event = threading.Event()
        self._marker: RecoveryMarker | None = None
        self._held_since: float | None = None
        self._probe_since: float | None = None
        self._most_queued = 0

    def audit(self, action: str, outcome: str, message: str, target: str | None = None, **detail: Any) -> None:
        try:
            self.audits.put_nowait({"action": action, "target": target, "outcome": outcome,
                                    "detail": {"message": message, **detail}, "ts": datetime.now(UTC)})  # fmt: skip
        except queue.Full:  # a flood of refused requests must not grow memory
            pass

    def run(self) -> None:
        while not self.stop_event.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # the watcher must outlive one bad round
                log.exception("proxy housekeeping failed")
            self._write_audits()
        self._write_audits()

    def _write_audits(self) -> None:
        while True:
            try:
                row = self.audits.get_nowait()
            except queue.Empty:
                return
            try:
                self.service.sidecar.record_action(requested_by="proxy", **row)
            except OasisOpsError as exc:
                log.warning("could not audit %s: %s", row["action"], exc.message)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        gate = self.service.gate
        hold_s = self.service.settings.proxy_recovery_hold_s
        marker = read_recovery(self.service.plan.control_dir, max_age_s=hold_s)
        if self._held_since is not None:
            self._most_queued = max(self._most_queued, gate.queued)
        if marker is not None and self._held_since is None and self._probe_since is None:
            self._marker, self._held_since, self._most_queued = marker, now, gate.queued
            gate.hold(marker.describe())
            self.audit("proxy_hold", "done", f"holding new requests: {marker.describe()}", marker.model,
                       recovery=marker.action, queued=gate.queued, in_flight=gate.in_flight)  # fmt: skip
        elif marker is None and self._held_since is not None:
            self._probe_since, self._held_since = now, None
            if gate.queued == 0:
                gate.release_hold()
            else:
                gate.probe()  # one request first: the rest when the runner answers it
        if self._probe_since is not None:
            waited = now - self._probe_since
            if not gate.probing:
                self._released("done", "the runner answered again")
            elif waited > hold_s:
                gate.release_hold()
                self._released("timeout", f"no answer from the runner within {hold_s:g} s: released anyway")

    def _released(self, outcome: str, why: str) -> None:
        marker = self._marker
        assert marker is not None and self._probe_since is not None
        held_for = (datetime.now(UTC) - marker.started_at).total_seconds() if marker.started_at else None
        message = f"released held requests after the {marker.action} of {marker.model or 'a model'}: {why}"
        if self._most_queued:
            message += f" ({self._most_queued} were waiting)"
        self.audit("proxy_release", outcome, message, marker.model, recovery=marker.action,
                   held_s=round(held_for, 1) if held_for is not None else None, most_queued=self._most_queued)  # fmt: skip
        self._marker, self._probe_since, self._most_queued = None, None, 0


class ProxyService:
    """The proxy's parts, started and stopped together (`serve()` blocks; `start()` runs it in a
    background thread, for tests and for the dashboard)."""

    def __init__(self, settings: Settings, plan: ProxyPlan) -> None:
        self.settings = settings
        self.plan = plan
        self.gate = FairGate(settings.proxy_max_concurrency, max_queue=settings.proxy_max_queue)
        self.writer = TrialWriter(plan.db, table=settings.table, memory_limit=settings.duckdb_memory_limit,
                                  threads=settings.duckdb_threads, flush_interval_s=1.0)  # fmt: skip
        self.sidecar = Sidecar(plan.sidecar, settings)
        self.housekeeper = Housekeeper(self)
        config = ProxyConfig(
            upstream=plan.upstream, run_id=plan.run_id, bind_host=plan.host,
            access_secret=settings.access_secret, allowed_hosts=tuple(settings.allowed_hosts),
            max_body_bytes=int(settings.proxy_max_body_mb * 1024 * 1024),
        )  # fmt: skip
        self.app = ProxyApp(config, self.gate, self.writer.write, guard=LoginGuard(),
                            on_refused_access=self._refused_access)  # fmt: skip
        self.control = RunnerControl(plan.control_dir, limiter=self.gate, extra_state=self._state,
                                     heartbeat_interval_s=0.5)  # state.json shows the queue within 0.5 s
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _refused_access(self, client: str, why: str) -> None:
        self.housekeeper.audit("proxy_access", "refused", f"request from {client} refused: {why}", client=client)

    def _state(self) -> dict[str, Any]:
        counters = self.app.counters
        held = self.gate.hold_reason or ("waiting for the runner to answer (one request at a time)" if self.gate.probing else None)
        return {
            "kind": "proxy", "queued": self.gate.queued, "held": held, "upstream": self.plan.upstream,
            "listen": f"{self.plan.host}:{self.plan.port}", "run_id": self.plan.run_id,
            "upstream_in_flight": counters.upstream_in_flight, "trials": counters.trials,
            "trials_by_status": dict(counters.by_status), "refused_queue_full": counters.refused_queue_full,
        }  # fmt: skip

    def _uvicorn(self) -> Any:
        import uvicorn  # lazily: only the proxy needs it

        config = uvicorn.Config(self.app, host=self.plan.host, port=self.plan.port, log_level="warning",
                                access_log=False, lifespan="on", timeout_graceful_shutdown=5)  # fmt: skip
        self._server = uvicorn.Server(config)
        return self._server

    def _bound(self) -> None:
        """Learn the port uvicorn bound (port 0: the system chose it)."""
        for server in getattr(self._server, "servers", []) or []:
            for sock in server.sockets:
                self.plan.port = int(sock.getsockname()[1])
                return

    def _begin(self) -> None:
        self.control.start()
        self.housekeeper.start()

    def _end(self) -> None:
        self.control.stop()
        self.housekeeper.stop_event.set()
        self.housekeeper.join(timeout=5)
        self.writer.close()

    def serve(self) -> None:
        """Run in the foreground until SIGINT/SIGTERM (uvicorn's handlers)."""
        server = self._uvicorn()
        # uvicorn re-raises the signal that stopped it once it has shut down; with the default
        # handlers that would end the process before the buffered trials are written
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._begin()
        try:
            server.run()
        finally:
            self._end()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not server.started:
            raise UsageError(f"the proxy could not listen on {self.plan.host}:{self.plan.port} (in use?)")

    def start(self, timeout_s: float = 10.0) -> ProxyService:
        server = self._uvicorn()
        self._begin()
        self._thread = threading.Thread(target=server.run, name="oasis-ops-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._end()
                raise UsageError(f"the proxy could not listen on {self.plan.host}:{self.plan.port}")
            time.sleep(0.01)
        self._bound()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._end()

    @property
    def url(self) -> str:
        host = f"[{self.plan.host}]" if ":" in self.plan.host else self.plan.host
        return f"http://{host}:{self.plan.port}"
