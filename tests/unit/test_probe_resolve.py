"""Name resolution is bounded by the same timeout as the connection, and done once per audit."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pgbatten.probe import resolve
from pgbatten.probe.check import check_target


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    resolve.clear_cache()
    yield
    resolve.clear_cache()


@pytest.fixture
def hung_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """getaddrinfo that never answers (until the test ends), like a resolver behind a dead DNS server."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hang(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example.test":
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "released")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield
    release.set()


@pytest.mark.usefixtures("hung_resolver")
def test_a_hung_lookup_is_cut_at_the_timeout() -> None:
    with pytest.raises(socket.gaierror, match=r"name resolution took longer than 0\.2 s"):
        resolve.connect_tcp("slow.example.test", 5432, 0.2)


@pytest.mark.usefixtures("hung_resolver")
def test_check_reports_a_hung_lookup_as_unreachable() -> None:
    result = check_target("slow.example.test:5432", timeout=0.2)
    assert not result.reachable
    assert result.error is not None and "name resolution took longer" in result.error


def test_connects_and_looks_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = socket.getaddrinfo

    def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        for _ in range(3):
            resolve.connect_tcp("localhost", port, 2.0).close()
    assert calls == ["localhost"]


def test_refused_is_the_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ConnectionRefusedError):
            resolve.connect_tcp("127.0.0.1", port, 2.0)
