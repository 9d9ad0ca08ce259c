"""Notifications of warning episodes, opt-in: a webhook (a JSON POST) and a desktop notification
(`notify-send` on Linux, `osascript` on macOS), once when an episode is raised and once when it
clears. Sending happens on one daemon thread behind a bounded queue: `notify()` never waits for
the network, so the sampler's tick never does either. A webhook that fails is retried a bounded
number of times with back-off; past that, or past the queue's bound, the message is dropped with
one log line."""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from oasis_ops.earlywarning.model import EarlyWarning

log = logging.getLogger(__name__)

QUEUE_BOUND = 100
ATTEMPTS = 4  # one try and three retries
BACKOFF_S = (1.0, 2.0, 4.0)
TIMEOUT_S = 5.0
Sender = Callable[[str, dict[str, Any]], int]  # (url, body) -> HTTP status


def payload(warning: EarlyWarning, change: str) -> dict[str, Any]:
    """The webhook's JSON body: the warning as `oasis-ops warnings --json` gives it, plus `change`."""
    return {"change": change, "source": "oasis-ops", **warning.as_dict()}


def _post(url: str, body: dict[str, Any]) -> int:
    import httpx

    # A remote webhook goes through the environment's proxy, as other HTTP clients would; a
    # receiver on this machine never does.
    from oasis_ops.access import is_loopback_name

    loopback = is_loopback_name(httpx.URL(url).host)
    with httpx.Client(timeout=TIMEOUT_S, trust_env=not loopback) as client:
        return client.post(url, json=body).status_code


def desktop_command(title: str, text: str, platform: str = sys.platform) -> list[str] | None:
    """The platform's notification command, or None where there is none."""
    if platform == "darwin" and shutil.which("osascript"):
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        return ["osascript", "-e", f'display notification "{quoted}" with title "{title}"']
    if platform.startswith("linux") and shutil.which("notify-send"):
        return ["notify-send", "--app-name=oasis-ops", title, text]
    return None


class Notifier:
    def __init__(self, webhook_url: str = "", desktop: bool = False, *, send: Sender = _post,
                 run: Callable[[list[str]], Any] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.webhook_url = webhook_url
        self.desktop = desktop
        self._send = send
        self._run = run or (lambda argv: subprocess.run(argv, check=False, timeout=TIMEOUT_S, capture_output=True))
        self._sleep = sleep
        self._queue: queue.Queue[tuple[EarlyWarning, str] | None] = queue.Queue(maxsize=QUEUE_BOUND)
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url) or self.desktop

    def notify(self, warning: EarlyWarning, change: str) -> None:
        """Queue one change (`raised` / `cleared`); returns at once."""
        if not self.enabled:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="oasis-notify", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((warning, change))
        except queue.Full:
            self.dropped += 1
            log.warning("notification queue full: dropped %s %s", change, warning.kind)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            warning, change = item
            if self.webhook_url:
                self._deliver(payload(warning, change))
            if self.desktop:
                self._show(warning, change)

    def _deliver(self, body: dict[str, Any]) -> None:
        for attempt in range(ATTEMPTS):
            try:
                status = self._send(self.webhook_url, body)
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                why = f"HTTP {status}"
            except Exception as exc:  # noqa: BLE001 - any failure of the network is a retry
                why = f"{type(exc).__name__}: {exc}"
            if attempt < ATTEMPTS - 1:
                self._sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        self.failed += 1
        log.warning("webhook gave up after %d attempts (%s): %s %s", ATTEMPTS, why, body.get("change"), body.get("kind"))

    def _show(self, warning: EarlyWarning, change: str) -> None:
        title = f"oasis-ops: {warning.kind.replace('_', ' ')}" + (" cleared" if change == "cleared" else "")
        text = warning.message if change == "raised" else f"cleared: {warning.message}"
        argv = desktop_command(title, text[:300])
        if argv is None:
            return
        try:
            self._run(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("desktop notification failed: %s", exc)
