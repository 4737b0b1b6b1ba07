"""Free TCP ports on 127.0.0.1 for the servers the tests start, one helper for the whole suite.

Under pytest-xdist (`make test`: two workers) each worker takes only its own class of ports, worker
i of n the ports with (port // 2) % n == i (not port % n: Linux hands out odd ports to bind(0)), so
two workers never pick the same port in the time between one choosing it and its server binding it
(seconds, for the stack's Airflow). Within a process a port is never handed out twice.
"""

from __future__ import annotations

import os
import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, this worker's own, not handed out before in this process."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    index = int(worker.removeprefix("gw")) if count > 1 else 0
    for _ in range(10_000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if (port // 2) % count == index and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1 after 10,000 tries")
