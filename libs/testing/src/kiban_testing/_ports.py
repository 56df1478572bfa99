"""Free TCP ports on the loopback interface.

Every harness process listens on 127.0.0.1 on a port chosen here, so several test sessions
(or several workspaces on one CI machine) never collide on fixed ports.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port; the socket is closed before returning, so another process
    could in theory take it before the caller binds. Callers that start servers retry with a
    new port when the server reports the address is in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
