"""tests/ports.free_port: under pytest-xdist each worker takes its own class of ports."""

import socket

import pytest

from tests import ports

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("worker,count", [("gw0", "2"), ("gw1", "2"), ("gw2", "3"), (None, None)])
def test_each_worker_takes_its_own_ports_and_never_one_twice(monkeypatch, worker, count):
    for name, value in (("PYTEST_XDIST_WORKER", worker), ("PYTEST_XDIST_WORKER_COUNT", count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(ports, "_handed_out", set())
    got = [ports.free_port() for _ in range(20)]
    assert len(set(got)) == 20
    if worker is not None:
        assert {(p // 2) % int(count) for p in got} == {int(worker[2:])}
    with socket.socket() as sock:  # and nothing listens there
        sock.bind(("127.0.0.1", got[-1]))
