"""Socket helpers shared by the emulated server and its emulated runner."""

from __future__ import annotations

import select
import socket


def peer_closed(sock: socket.socket) -> bool:
    """True when the other side closed (EOF) or reset the connection; never blocks. Pipelined
    bytes waiting to be read are not a close."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
