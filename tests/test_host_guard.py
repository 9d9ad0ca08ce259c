"""Host header checks against DNS rebinding (oasis_ops.access.host_header_allowed)."""

from __future__ import annotations

import pytest

from oasis_ops.server import host_header_allowed


@pytest.mark.parametrize("header", ["127.0.0.1:8501", "localhost:8501", "[::1]:8501", "LOCALHOST", "app.localhost:8501",
                                    "127.0.0.2:8501", None, ""])  # fmt: skip
def test_loopback_names_pass_when_bound_to_loopback(header: str | None) -> None:
    assert host_header_allowed(header, "127.0.0.1")


@pytest.mark.parametrize("header", ["rebind.example.test:8501", "evil.com", "192.0.2.7:8501", "[2001:db8::1]:8501",
                                    "localhost.evil.com:8501", "127.0.0.1.nip.io:8501"])  # fmt: skip
def test_foreign_names_are_refused_when_bound_to_loopback(header: str) -> None:
    assert not host_header_allowed(header, "127.0.0.1")
    assert not host_header_allowed(header, "localhost")


def test_off_loopback_addresses_machine_names_and_allowed_hosts_pass_other_names_do_not() -> None:
    def names() -> frozenset[str]:
        return frozenset({"gpu-box", "gpu-box.lab.example"})

    def ok(header: str, bind: str = "0.0.0.0", allowed: tuple[str, ...] = ()) -> bool:
        return host_header_allowed(header, bind, allowed, names=names)

    # an address typed into the browser cannot be rebound; this machine's own names are its own
    assert ok("192.0.2.10:8501") and ok("[2001:db8::1]:8501") and ok("localhost:8501")
    assert ok("gpu-box:8501") and ok("GPU-BOX.lab.example") and ok("console.lab.example", bind="console.lab.example")
    # any other name is what a rebinding page would send
    assert not ok("console.lab.example:8501") and not ok("evil.example")
    assert ok("console.lab.example:8501", allowed=("console.lab.example",)) and ok("anything.example", allowed=("*",))
