"""The HTTP layer's own bounds (`export/http_limits.py`), held against an outside client.

Raw sockets on 127.0.0.1 send what no HTTP library would: heads of 1 MiB and
256 MiB, too many header lines, heads and bodies dribbled a byte at a time,
more connections than the server takes. Each is refused early (431, 408,
503) while the server's memory stays bounded and normal requests, between
and after them, are answered; with one server process and with `--workers 2`.
"""

import json
import select
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 8  # per server process
LINGER_S = 2.0  # http_limits.LINGER_S: a refused connection closes within it
FLAGS = ["--header-timeout-s", HEADER_TIMEOUT_S, "--body-timeout-s", BODY_TIMEOUT_S,
         "--max-connections", MAX_CONNECTIONS]


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def server(request, device, device_env, tiny, serve_process):
    """A server over the tiny export with short deadlines and few connections."""
    _, export_dir = tiny
    server = serve_process(device / "serve.py", export_dir,
                           [*FLAGS, "--workers", request.param], device_env, log_dir=device)
    server.workers = request.param
    yield server
    server.stop()


def _rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its descendants (the workers), from /proc."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) << 10
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return total + sum(_rss_bytes(child) for child in children)


def _read_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """What the server sends until it closes the connection (or `timeout`)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def _error(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return json.loads(body)["error"]


def _send_until_answered(sock: socket.socket, head: bytes, filler: bytes, total: int) -> int:
    """Sends `head`, then `filler` until `total` bytes or the server answers; returns bytes sent."""
    sock.sendall(head)
    sent = len(head)
    while sent < total:
        if select.select([sock], [], [], 0)[0]:
            break  # an answer (or the close): stop sending
        try:
            sock.sendall(filler[:total - sent])
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += min(len(filler), total - sent)
    return sent


def _assert_serves(server):
    """A normal request on a new connection: the health route and one decode."""
    assert server.call("GET", "/v2/health/ready")[0] == 200
    z = np.zeros((1, 3), np.float32)
    body = {"inputs": [{"name": "z", "shape": [1, 3], "datatype": "FP32",
                        "data": z.ravel().tolist()}]}
    status, answer = server.json("POST", "/v2/models/decoder/infer", body)
    assert status == 200, answer
    assert answer["outputs"][0]["shape"] == [1, 8, 8, 1]


@pytest.mark.parametrize("size", [1 << 20, 256 << 20], ids=["1MiB", "256MiB"])
@pytest.mark.parametrize("where", ["header", "url"])
def test_a_huge_request_head_is_refused_early_with_bounded_memory(server, size, where):
    before = _rss_bytes(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        if where == "header":
            head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
        else:
            head = b"GET /v2/health/live?q="
        sent = _send_until_answered(sock, head, b"a" * (64 << 10), size)
        answer = _read_answer(sock)
    after = _rss_bytes(server.proc.pid)
    assert _status(answer) == 431
    assert "larger than 65536 bytes (--max-header-bytes)" in _error(answer)
    assert sent < 8 << 20, sent  # answered long before the client was done
    assert after - before < 64 << 20, (before, after)
    _assert_serves(server)


def test_too_many_header_lines_are_refused(server):
    def request(lines: int) -> bytes:
        headers = b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(lines - 2))  # + 2 below
        return (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + headers
                + b"Connection: close\r\n\r\n")

    for lines, expected in ((100, 200), (101, 431), (5000, 431)):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request(lines))
            answer = _read_answer(sock)
        assert _status(answer) == expected, (lines, answer[:300])
        if expected == 431:
            assert "more than 100 header lines (--max-headers)" in _error(answer)
    # Just under the byte limit is still served (the limit counts the whole head).
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    padded = head + b"p" * ((64 << 10) - len(head) - 4) + b"\r\n\r\n"
    assert len(padded) == 64 << 10
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(padded)
        assert _status(_read_answer(sock)) == 200
    _assert_serves(server)


@pytest.mark.parametrize("start", [b"", b"GET /v2/health/live HTTP/1.1\r\n"],
                         ids=["silent", "dribbling"])
def test_a_slow_request_head_gets_408_within_the_timeout(server, start):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        began = time.monotonic()
        sock.sendall(start)
        answer = b""
        # One byte every 0.2 s, for longer than the timeout allows.
        for byte in b"Host: x\r\nX-Slow: " + b"s" * 100:
            if select.select([sock], [], [], 0.2)[0]:
                break
            if start:
                try:
                    sock.send(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
        answer = _read_answer(sock, timeout=5)
        took = time.monotonic() - began
    assert _status(answer) == 408, answer[:300]
    assert f"did not arrive within {HEADER_TIMEOUT_S:g} s (--header-timeout-s)" in _error(answer)
    assert HEADER_TIMEOUT_S - 0.1 < took < HEADER_TIMEOUT_S + 1.5, took
    _assert_serves(server)


def test_a_body_still_dribbling_after_the_answer_is_cut_off(server):
    # The health route answers without reading the body; the client keeps sending it.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        began = time.monotonic()
        closed = False
        received = b""
        while time.monotonic() - began < BODY_TIMEOUT_S + LINGER_S + 3:
            if select.select([sock], [], [], 0.2)[0]:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                received += chunk
            try:
                sock.send(b"b")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        took = time.monotonic() - began
    assert _status(received) == 200
    assert closed and took < BODY_TIMEOUT_S + LINGER_S + 1.5, took
    _assert_serves(server)


def test_connections_above_the_limit_get_503_and_normal_requests_follow(server):
    limit = MAX_CONNECTIONS * server.workers  # per process; the supervisor deals in turn
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(limit)]
    try:
        for sock in held:  # each one answered once, so each worker holds its share
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            assert _status(sock.recv(65536)) == 200
        for _ in range(server.workers):
            with socket.create_connection(("127.0.0.1", server.port)) as extra:
                extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                began = time.monotonic()
                answer = _read_answer(extra, timeout=5)
                assert time.monotonic() - began < 1.0
            assert _status(answer) == 503, answer[:300]
            assert b"retry-after: 1" in answer.lower()
            assert f"{MAX_CONNECTIONS} connections open (--max-connections)" in _error(answer)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5  # until the server has seen them close
    while server.call("GET", "/v2/health/ready")[0] == 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _assert_serves(server)
    assert server.proc.poll() is None


def test_keep_alive_and_pipelined_requests_are_still_served(server):
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        # Three pipelined requests in one write, then one more split across writes.
        sock.sendall(request * 3)
        sock.sendall(request[:10])
        time.sleep(0.2)
        sock.sendall(request[10:-2] + b"Connection: close\r\n\r\n")
        answer = _read_answer(sock)
    assert answer.count(b"HTTP/1.1 200") == 4, answer
    _assert_serves(server)


def test_bad_bounds_are_refused_in_one_line(device, device_env, tiny, tmp_path):
    _, export_dir = tiny
    for flag, value in (("--max-header-bytes", "0"), ("--max-headers", "-1"),
                        ("--header-timeout-s", "nan"), ("--max-connections", "0")):
        done = subprocess.run([sys.executable, str(device / "serve.py"), str(export_dir),
                               "--port", "0", flag, value], env=device_env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in done.stderr, lines


def test_without_httptools_h11_and_uvicorn_bound_heads_and_connections(server_module,
                                                                        monkeypatch):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    http_limits = server_module("http_limits")
    limits = http_limits.HttpLimits(max_header_bytes=4096, max_connections=7)
    with_httptools = http_limits.config_options(limits)
    assert with_httptools["ws"] == "none" and issubclass(with_httptools["http"],
                                                         HttpToolsProtocol)
    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)
    assert http_limits.config_options(limits) == {
        "http": "h11", "ws": "none", "h11_max_incomplete_event_size": 4096,
        "limit_concurrency": 7}
