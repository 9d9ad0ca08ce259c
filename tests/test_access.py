"""Who may use the console: a bind off loopback needs an access secret (exit 2 otherwise, before
anything starts), the secret is never printed, sign-in failures are rate-limited per client."""

from __future__ import annotations

import pytest

from oasis_ops.access import MIN_SECRET_CHARS, LoginGuard, check_bind, secret_matches
from oasis_ops.cli import main as cli_main
from oasis_ops.errors import UsageError


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "console.lab.example"])
def test_a_bind_off_loopback_without_a_secret_is_refused_before_anything_starts(
    host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OASIS_OPS_ACCESS_SECRET", raising=False)
    assert cli_main(["dashboard", "--host", host, "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "without an access secret" in err and "OASIS_OPS_ACCESS_SECRET" in err
    monkeypatch.setenv("OASIS_OPS_ACCESS_SECRET", "short")
    assert cli_main(["dashboard", "--host", host, "--port", "1"]) == 2
    assert "too short" in capsys.readouterr().err


def test_loopback_needs_no_secret_and_a_long_one_is_accepted() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, "")
    check_bind("0.0.0.0", "x" * MIN_SECRET_CHARS)
    with pytest.raises(UsageError):
        check_bind("0.0.0.0", "x" * (MIN_SECRET_CHARS - 1))


def test_the_secret_is_never_printed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OASIS_OPS_ACCESS_SECRET", "s3cret-value-for-the-test")
    for argv in (["settings"], ["settings", "--json"]):
        assert cli_main(argv) == 0
        out = capsys.readouterr().out
        assert "s3cret-value-for-the-test" not in out and "(set)" in out


def test_secret_comparison() -> None:
    assert secret_matches("correct horse", "correct horse")
    assert not secret_matches("correct hors", "correct horse") and not secret_matches("", "correct horse")
    assert not secret_matches("", "")  # no secret configured: nobody signs in with an empty one


def test_failed_sign_ins_lock_one_client_out_for_the_window() -> None:
    now = [1000.0]
    guard = LoginGuard(max_failures=3, window_s=60.0, max_clients=2, clock=lambda: now[0])
    for _ in range(3):
        assert guard.wait_s("10.0.0.1") == 0.0
        guard.failed("10.0.0.1")
    assert guard.wait_s("10.0.0.1") == pytest.approx(60.0)
    assert guard.wait_s("10.0.0.2") == 0.0  # another client is not punished
    now[0] += 30
    assert guard.wait_s("10.0.0.1") == pytest.approx(30.0)
    now[0] += 31
    assert guard.wait_s("10.0.0.1") == 0.0  # the failures left the window
    guard.failed("a")
    guard.failed("b")
    guard.failed("c")  # bounded: the least recently seen client is forgotten
    assert len(guard._failures) == 2


def test_a_secret_in_a_file_others_can_read_is_refused(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from oasis_ops.errors import ConfigError
    from oasis_ops.settings import load_settings

    config = tmp_path / "oasis-ops.toml"
    config.write_text('access_secret = "a-long-enough-secret"\n')
    config.chmod(0o644)
    with pytest.raises(ConfigError, match="other users may read it"):
        load_settings(config, env={})
    config.chmod(0o600)
    assert load_settings(config, env={}).access_secret == "a-long-enough-secret"
    with pytest.raises(ConfigError, match="cannot be given on the command line"):
        load_settings(env={}, flags={"access_secret": "x" * 20})
