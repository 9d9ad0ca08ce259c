"""The live path of early warning: the sampler raises a warning once into the sidecar (a `warnings`
row and an event), a restarted sampler takes it over instead of raising it twice, and the webhook
is delivered once, retried on 500, bounded, and never holds up the caller (a real HTTP server on
127.0.0.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_sampler import FlakyHost

from oasis_ops.earlywarning.live import LiveWarnings, open_warnings
from oasis_ops.earlywarning.model import EarlyWarning
from oasis_ops.earlywarning.notify import ATTEMPTS, Notifier, desktop_command, payload
from oasis_ops.probes.host import HostSample
from oasis_ops.sampler import Sampler
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
GB = 1_000_000_000


class Hook:
    """A webhook receiver: answers each POST with the next status of `statuses` (the last one repeats),
    optionally holding each answer until `release` is set."""

    def __init__(self, statuses: list[int], hold: bool = False) -> None:
        self.statuses, self.bodies = list(statuses), []  # type: list[int], list[dict[str, Any]]
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.entered.set()
                hook.release.wait(30)
                hook.bodies.append(body)
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory() -> Iterator[Any]:
    made: list[Hook] = []

    def make(statuses: list[int], hold: bool = False) -> Hook:
        made.append(Hook(statuses, hold))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


def warning(kind: str = "memory_exhaustion") -> EarlyWarning:
    return EarlyWarning(kind, T0, "warn", "free memory 20 GB, falling", {"free_bytes": 20 * GB}, "concurrency 1",
                        T0 + timedelta(minutes=30), T0 - timedelta(minutes=2))  # fmt: skip


def test_webhook_is_delivered_once_after_a_500(hook_factory: Any) -> None:
    hook = hook_factory([500, 200])
    sleeps: list[float] = []
    notifier = Notifier(hook.url, sleep=sleeps.append)  # the real POST (httpx), without the back-off's sleeps
    notifier.notify(warning(), "raised")
    notifier.close(timeout_s=20)
    assert notifier.delivered == 1 and notifier.failed == 0 and sleeps == [1.0]
    assert len(hook.bodies) == 2 and hook.bodies[0] == hook.bodies[1] == json.loads(json.dumps(payload(warning(), "raised")))
    assert hook.bodies[1]["change"] == "raised" and hook.bodies[1]["kind"] == "memory_exhaustion" and hook.bodies[1]["eta"] == "2026-03-02T14:30:00Z"


def test_webhook_gives_up_after_its_attempts(hook_factory: Any) -> None:
    hook = hook_factory([500])
    sleeps: list[float] = []
    notifier = Notifier(hook.url, sleep=sleeps.append)
    notifier.notify(warning(), "cleared")
    notifier.close(timeout_s=20)
    assert notifier.delivered == 0 and notifier.failed == 1 and len(hook.bodies) == ATTEMPTS and sleeps == [1.0, 2.0, 4.0]


def test_notify_returns_while_the_webhook_still_answers(hook_factory: Any) -> None:
    hook = hook_factory([200], hold=True)
    notifier = Notifier(hook.url, sleep=lambda s: None)
    notifier.notify(warning(), "raised")  # returns at once: the POST happens on the notifier's thread
    assert hook.entered.wait(20)  # the POST arrived...
    assert not hook.bodies and notifier.delivered == 0  # ...and is still unanswered: the caller was not held
    hook.release.set()
    notifier.close(timeout_s=20)
    assert notifier.delivered == 1


def test_desktop_commands_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    import oasis_ops.earlywarning.notify as notify

    monkeypatch.setattr(notify.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert desktop_command("t", 'say "x"', "darwin") == ["osascript", "-e", 'display notification "say \\"x\\"" with title "t"']
    assert desktop_command("t", "x", "linux") == ["notify-send", "--app-name=oasis-ops", "t", "x"]
    assert desktop_command("t", "x", "win32") is None
    monkeypatch.setattr(notify.shutil, "which", lambda name: None)
    assert desktop_command("t", "x", "linux") is None
    shown: list[list[str]] = []
    monkeypatch.setattr(notify.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(notify.sys, "platform", "linux")
    notifier = Notifier(desktop=True, run=shown.append)
    notifier.notify(warning(), "raised")
    notifier.notify(warning(), "cleared")
    notifier.close(timeout_s=20)
    assert [argv[2] for argv in shown] == ["oasis-ops: memory exhaustion", "oasis-ops: memory exhaustion cleared"]
    assert shown[1][3].startswith("cleared: free memory 20 GB")


def falling(minute: float) -> HostSample:
    free = 30 * GB - 0.5 * GB * max(minute - 5, 0)  # flat for five minutes, then -0.5 GB/min
    return HostSample(ts=T0, mem_total_bytes=64 * GB, mem_free_bytes=free, mem_available_bytes=free, page_size=4096, pages_free=free // 4096,
                      swap_used_bytes=0, swapins=0, swapouts=0, pressure=0.0, source="linux:/proc", pressure_level="normal")  # fmt: skip


def test_the_sampler_raises_a_warning_once_and_a_restarted_one_takes_it_over(tmp_path: Path, hook_factory: Any) -> None:
    hook = hook_factory([200])
    sidecar = tmp_path / "s.ops.duckdb"
    settings = load_settings(env={}).replace(ollama_host="http://127.0.0.1:9", notify_webhook_url=hook.url)
    now = [T0]
    minutes = [i / 6 for i in range(6 * 20)]  # a tick every 10 s for 20 minutes (the rules run every 30 s)
    host = FlakyHost([falling(m) for m in minutes])
    sampler = Sampler(sidecar, settings, host_source=host, clock=lambda: now[0], monotonic=lambda: (now[0] - T0).total_seconds(),
                      flush_interval_s=0.0, follow_logs=False, run_watchdog=False)  # fmt: skip
    sampler.open()
    try:
        raised_at = []
        for m in minutes:
            now[0] = T0 + timedelta(minutes=m)
            report = sampler.tick()
            raised_at += [now[0] for w, change in report.warnings if change == "raised"]
    finally:
        sampler.close()
    assert len(raised_at) == 1 and T0 + timedelta(minutes=5) < raised_at[0] < T0 + timedelta(minutes=20)
    rows = Sidecar(sidecar).warnings_since(T0)
    assert rows["change"].tolist() == ["raised"] and rows["kind"].tolist() == ["memory_exhaustion"]
    assert rows["action"].iloc[0] == "concurrency 1" and rows["eta"].iloc[0] > rows["ts"].iloc[0]
    events = Sidecar(sidecar).events_since(T0)
    assert events["kind"].tolist().count("warning_raised") == 1
    # the webhook got it (from the notifier's thread, closed with the sampler)
    assert [b["change"] for b in hook.bodies] == ["raised"]

    # a new sampler on the same sidecar: the open episode is taken over, not raised again
    later = now[0] + timedelta(seconds=10)
    assert [w.kind for w in open_warnings(Sidecar(sidecar), later)] == ["memory_exhaustion"]
    live = LiveWarnings(Sidecar(sidecar), settings.replace(notify_webhook_url=""))
    rows_again, changes = live.tick(later, 0.0)
    assert changes == [] and rows_again == [] and [w.kind for w in live.tracker.active] == ["memory_exhaustion"]
