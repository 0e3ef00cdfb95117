"""The deploy edge's relay (resources/edge.py), run as a real process between real sockets on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from typing import Iterator

import pytest

from setuptools_grocker.image.recipes import RESOURCES

ANSWER = b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 300_000  # larger than any socket buffer: it must really flow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def backend() -> Iterator[tuple[int, list[bytes]]]:
    """A server that reads the whole request (until EOF), then answers and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                received.append(data)
                conn.sendall(ANSWER)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
    server.close()
    thread.join(timeout=5)


@pytest.fixture()
def edge(backend: tuple[int, list[bytes]]) -> Iterator[int]:
    port = free_port()
    with subprocess.Popen([sys.executable, str(RESOURCES / "edge.py"), f"127.0.0.1:{port}=127.0.0.1:{backend[0]}"],
                          stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            # It says where it listens once it does (a probe connection would reach the backend).
            assert proc.stdout.readline().startswith(b"edge: 127.0.0.1:"), "the edge did not start"
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_a_client_half_close_still_gets_the_whole_answer(edge: int, backend: tuple[int, list[bytes]]) -> None:
    with socket.create_connection(("127.0.0.1", edge), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        client.shutdown(socket.SHUT_WR)  # "that is my whole request"
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer == ANSWER
    assert backend[1][-1] == b"GET / HTTP/1.0\r\n\r\n"

