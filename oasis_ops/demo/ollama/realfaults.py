"""Demo faults acted out on real processes: signals to llama.cpp runners, a real memory hog.

The emulator's ticker calls `tick()` every 0.1 s. For each real-engine runner:
- stall on: SIGSTOP until the fault is cleared (then SIGCONT);
- stopping_deadlock on: the next runner that is generating gets SIGSTOP and is never continued
  (a wedged runner; only a kill ends it);
- latency_drift / memory_pressure slowdown m > 1: a duty cycle of SIGCONT for 1/m of every
  100 ms and SIGSTOP for the rest, so tokens really come m times slower;
- runner_crash (any engine): SIGKILL of the next runner that is generating.
With the emulator on the real host, memory_pressure drives the capped hog child process.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oasis_ops.demo.ollama.runners import Runner
    from oasis_ops.demo.ollama.server import Emulator

DUTY_PERIOD_S = 0.1


class RealFaultDriver:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.lock = threading.Lock()
        self.holds: dict[int, set[str]] = {}  # runner pid -> {"stall", "wedge"}
        self.slowdown = 1.0
        self.hog: subprocess.Popen[bytes] | None = None
        self.hog_sent: float | None = None
        self._stop = threading.Event()
        self._duty = threading.Thread(target=self._duty_cycle, name="duty-cycle", daemon=True)
        self._duty.start()

    def _real(self) -> list[Runner]:
        return [r for r in self.emulator.runners() if r.engine == "real" and r.alive() and r.pid is not None]

    def _hold(self, runner: Runner, reason: str) -> None:
        with self.lock:
            holds = self.holds.setdefault(runner.pid or 0, set())
            if reason not in holds:
                holds.add(reason)
                runner.send_signal(signal.SIGSTOP)
                runner.stopped_by_fault = True

    def _unhold(self, runner: Runner, reason: str) -> None:
        with self.lock:
            holds = self.holds.get(runner.pid or 0)
            if not holds or reason not in holds:
                return
            holds.discard(reason)
            if not holds:
                runner.send_signal(signal.SIGCONT)
                runner.stopped_by_fault = False

    def tick(self) -> None:
        board = self.emulator.board
        real = self._real()
        stall_on = board.is_on("stall")
        for runner in real:
            if stall_on:
                self._hold(runner, "stall")
            else:
                self._unhold(runner, "stall")
            if runner.in_flight > 0 and board.is_on("stopping_deadlock") and "wedge" not in self.holds.get(runner.pid or 0, set()):
                if board.take("stopping_deadlock"):
                    self._hold(runner, "wedge")
        for runner in self.emulator.runners():
            if runner.alive() and runner.answering > 0 and board.take("runner_crash"):  # mid-answer, as documented
                runner.send_signal(signal.SIGKILL)
        if board.used_up("runner_crash"):
            board.set("runner_crash", False)  # a one-shot: off once every kill was done
        # A VRAM spill on the simulated GPU slows the real runner as much as an emulated one.
        split = max((board.split_slowdown(r.cpu_share) for r in real), default=1.0)
        self.slowdown = board.real_slowdown() * split if real else 1.0
        with self.lock:  # forget runners that are gone
            alive = {r.pid for r in real}
            for pid in list(self.holds):
                if pid not in alive:
                    del self.holds[pid]
        self._drive_hog()

    def _duty_cycle(self) -> None:
        while not self._stop.is_set():
            factor = self.slowdown
            if factor <= 1.0:
                self._stop.wait(DUTY_PERIOD_S)
                continue
            runners = self._real()
            free = [r for r in runners if not self.holds.get(r.pid or 0)]
            run_s = DUTY_PERIOD_S / factor
            for runner in free:
                runner.send_signal(signal.SIGCONT)
            self._stop.wait(run_s)
            for runner in free:
                if not self.holds.get(runner.pid or 0):
                    runner.send_signal(signal.SIGSTOP)
            self._stop.wait(DUTY_PERIOD_S - run_s)
            for runner in free:
                if not self.holds.get(runner.pid or 0):
                    runner.send_signal(signal.SIGCONT)

    def _drive_hog(self) -> None:
        emu = self.emulator
        if emu.board.simulated_host:
            return
        target = emu.board.hog_target_mb() if emu.board.is_on("memory_pressure") else 0.0
        if target <= 0 and self.hog is None:
            return
        if self.hog is None or self.hog.poll() is not None:
            self.hog = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [emu.home.interpreter, "-m", "oasis_ops.demo.ollama.hog", "--cap-mb", f"{emu.cfg.hog_cap_mb:g}"],
                env=emu.child_env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            self.hog_sent = None
        if self.hog_sent is None or abs(target - self.hog_sent) >= 1.0:
            with contextlib.suppress(OSError, ValueError):
                assert self.hog.stdin is not None
                self.hog.stdin.write(f"{target:.0f}\n".encode())
                self.hog.stdin.flush()
                self.hog_sent = target
        if target <= 0:
            self._stop_hog()

    def _stop_hog(self) -> None:
        hog, self.hog = self.hog, None
        if hog is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if hog.stdin is not None:
                hog.stdin.close()  # EOF: the hog frees its memory and exits
        try:
            hog.wait(5.0)
        except subprocess.TimeoutExpired:
            hog.kill()
            hog.wait(5.0)

    def hog_pid(self) -> int | None:
        return self.hog.pid if self.hog is not None and self.hog.poll() is None else None

    def close(self) -> None:
        self._stop.set()
        self._stop_hog()
        for runner in self._real():
            runner.send_signal(signal.SIGCONT)
