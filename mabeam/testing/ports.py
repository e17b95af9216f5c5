"""Free TCP ports on loopback, for servers a test or a perf row starts on ports of its choosing."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (the OS's pick of an ephemeral one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
