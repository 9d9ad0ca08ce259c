"""The dashboard server: loopback-only binding, settings handed to the app, clean start and stop."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers_server import listening_addresses, running_console

from oasis_ops.cli import main
from oasis_ops.errors import ServerError
from oasis_ops.server import (
    ChildService,
    check_port_free,
    free_port,
    http_url,
    run_services,
    settings_env,
)
from oasis_ops.settings import load_settings


def _other_local_addresses() -> list[str]:
    """This machine's own non-loopback addresses (packets to them never leave the host)."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                found.append(a.address)
            elif a.family == socket.AF_INET6 and a.address != "::1" and not a.address.lower().startswith("fe80"):
                found.append(a.address)
    return sorted(found)


def _assert_loopback_only(port: int) -> None:
    addresses = listening_addresses(port)
    assert addresses, f"nothing listens on port {port}"
    assert set(addresses) == {"127.0.0.1"}, f"port {port} listens on {addresses}"
    assert not {"0.0.0.0", "::", "::ffff:0.0.0.0"} & set(addresses)


def _assert_unreachable_elsewhere(port: int) -> None:
    others = _other_local_addresses()
    if not others:
        pytest.skip("no non-loopback interface address on this machine")
    for address in others:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=3).close()


@pytest.mark.slow
def test_dashboard_listens_on_loopback_only(tmp_path: Path) -> None:
    with running_console(["dashboard", "--db", str(tmp_path / "not-yet.duckdb")], tmp_path) as console:
        _assert_loopback_only(console.port)
        with socket.create_connection(("127.0.0.1", console.port), timeout=3):
            pass
        streamlit = psutil.Process(console.process.pid).children(recursive=True)
        assert streamlit, "the CLI did not start Streamlit as its child"
        _assert_unreachable_elsewhere(console.port)
    # Stopped cleanly: the CLI exited 0 and its Streamlit child is gone with it.
    assert console.process.returncode == 0, console.log()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in streamlit)
    assert listening_addresses(console.port) == []


@pytest.mark.slow
def test_demo_listens_on_loopback_only(tmp_path: Path) -> None:
    pytest.importorskip("oasis_ops.trials.generate")
    with running_console(["demo", "--dir", str(tmp_path / "demo")], tmp_path) as console:
        _assert_loopback_only(console.port)
        assert (tmp_path / "demo" / "trials.duckdb").is_file()
        _assert_unreachable_elsewhere(console.port)


def test_settings_reach_the_app_through_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "oasis-ops.toml"
    cfg.write_text('db = "rel/trials.duckdb"\nok_words = ["ok", "success"]\nwatchdog = true\nport = 9123\n')
    settings = load_settings(cfg, env={})
    env = settings_env(settings)
    assert env["OASIS_OPS_PORT"] == "9123"
    # Paths are made absolute: the app's working directory is the project, not the caller's.
    assert Path(env["OASIS_OPS_DB"]).is_absolute() and env["OASIS_OPS_DB"].endswith("rel/trials.duckdb")
    child = load_settings(None, env=env)
    for name, value in settings.values.items():
        if name != "db":
            assert child.values[name] == value, name
    assert child.ok_words == ["ok", "success"] and child.watchdog is True


def test_busy_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
        assert main(["dashboard", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"oasis-ops: port {port} on 127.0.0.1 is already in use (choose another with --port)"]


def test_http_url_reaches_wildcard_binds_over_loopback() -> None:
    assert http_url("0.0.0.0", 80, "/x") == "http://127.0.0.1:80/x"
    assert http_url("::", 81) == "http://[::1]:81/"
    assert http_url("127.0.0.1", 82) == "http://127.0.0.1:82/"


def _sleeper(name: str, tmp_path: Path, *, exit_after_s: float | None = None) -> ChildService:
    # The child starts a grandchild in its own group: stop() must take down the whole group.
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"time.sleep({exit_after_s if exit_after_s is not None else 600})\n"
    )
    marker = tmp_path / f"{name}.started"
    return ChildService(
        name,
        [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()\n" + code],
        ready=marker.exists,
        startup_timeout_s=30,
        stop_timeout_s=5,
    )


def test_run_services_stops_everything_when_one_dies(tmp_path: Path) -> None:
    steady = _sleeper("steady", tmp_path)
    dying = _sleeper("dying", tmp_path, exit_after_s=1.0)
    groups: list[list[psutil.Process]] = []

    def remember() -> None:
        for service in (steady, dying):
            assert service.pid is not None
            groups.append([psutil.Process(service.pid), *psutil.Process(service.pid).children(recursive=True)])

    started = time.monotonic()
    with pytest.raises(ServerError, match="dying stopped unexpectedly"):
        run_services([steady, dying], on_ready=remember, poll_interval_s=0.1)
    assert time.monotonic() - started < 60
    assert steady.poll() is not None, "the healthy service was left running"
    for group in groups:
        gone, alive = psutil.wait_procs(group, timeout=10)
        assert alive == [], f"left running: {alive}"


def test_service_that_fails_to_start_reports_its_log(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    bad = ChildService(
        "bad",
        [sys.executable, "-c", "import sys; print('cannot bind: boom'); sys.exit(3)"],
        ready=lambda: False,
        log_path=log,
        startup_timeout_s=30,
    )
    with pytest.raises(ServerError, match=r"bad exited with code 3 while starting(.|\n)*cannot bind: boom"):
        run_services([bad])


def test_free_port_is_bindable() -> None:
    port = free_port()
    check_port_free("127.0.0.1", port)  # raises if it is not
