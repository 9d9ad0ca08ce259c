"""Host header checks against DNS rebinding (oasis_ops.server.host_header_allowed)."""

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


def test_an_explicit_public_bind_is_the_operators_choice() -> None:
    assert host_header_allowed("console.lab.example:8501", "192.0.2.10")
