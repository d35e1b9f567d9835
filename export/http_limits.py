"""The HTTP layer's own bounds: request-head size, header count, read deadlines, connections.

A device module of the server: the standard library and uvicorn only.
uvicorn's httptools protocol buffers a request head without limit (httptools
joins a header's pieces until the next one starts) and keeps a connection
that sends its head slowly, or nothing at all, open for ever. `protocol_class`
returns a subclass of it that bounds, per connection:

- the request head (request line and headers): at most `max_header_bytes`
  are ever handed to the parser, so memory stays bounded however much a
  client sends; 431 above, as for more than `max_headers` header lines;
- the time from the connection (or a request's first byte) to the end of
  its head: 408 after `header_timeout_s`;
- the time a request's body may take to arrive, `body_timeout_s`: the
  handlers that read a body answer 408 themselves (`routes.read_body`); here
  the connection is closed after the answer, and a client still dribbling the
  body of a request already answered is cut off;
- the open connections of the process: the one above `max_connections` is
  answered 503 at once and closed.

A refusal is written with `Connection: close`, then the connection is shut
for writing and what the client still sends is read and dropped for
`LINGER_S` before it closes, so the client reads the answer instead of a
reset. Without httptools (uvicorn's h11 protocol), h11's own head limit and
uvicorn's `limit_concurrency` stand in, without the deadlines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

log = logging.getLogger("keras_vae.serve")

LINGER_S = 2.0  # how long a refused connection's input is drained before it closes


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """The HTTP layer's bounds (each one a command-line flag of `serve.py`).

    Attributes:
        max_header_bytes: Largest request head, request line and headers
            together (431 above).
        max_headers: Most header lines in one request (431 above).
        header_timeout_s: Time a client has, from connecting or from its
            request's first byte, to send the whole head (408 after).
        body_timeout_s: Time a client has to send a request's body after its
            head (the handlers answer 408; the connection closes after).
        max_connections: Open connections per server process (a worker with
            `--workers N`); the next one is answered 503 and closed.

    Raises:
        ValueError: a bound that is not a positive number.
    """

    max_header_bytes: int = 64 << 10
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 512

    def __post_init__(self):
        for name in ("max_header_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, "
                                 f"got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def refusal(status: int, reason: str, message: str, extra=()) -> bytes:
    """A whole HTTP/1.1 response `{"error": message}` that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {reason}".encode(), b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(), b"connection: close",
            *(name + b": " + value for name, value in extra)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def protocol_class(limits: HttpLimits):
    """The uvicorn protocol class that holds `limits` (pass it as `uvicorn.Config(http=...)`).

    Returns:
        A subclass of uvicorn's httptools protocol, or, without httptools,
        the string `"h11"` (give `config_options(limits)` to the Config too).
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return "h11"

    base = HttpToolsProtocol  # its methods are called directly: these run on every request

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the bounds of `limits` (module docstring)."""

        def __init__(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)
            self._head_bytes: int | None = 0  # bytes of the current head; None in a body
            self._too_many_headers = False
            self._refused = False  # answered and closing: input is dropped
            self._head_timer = None
            self._body_timer = None

        # -- the connection
        def connection_made(self, transport) -> None:
            if len(self.connections) >= limits.max_connections:
                # Not counted as a connection: it closes within LINGER_S whatever the client does.
                self.transport = transport
                self._refuse(503, "Service Unavailable",
                             f"the server has {limits.max_connections} connections open "
                             "(--max-connections); try again later", [(b"retry-after", b"1")])
                return
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_late)

        def connection_lost(self, exc) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head_bytes is not None:
                room = limits.max_header_bytes - self._head_bytes
                if len(data) > room:
                    # Only what fits the limit reaches the parser: the head ends
                    # within it, or the request is refused.
                    if room > 0:
                        self._head_bytes += room
                        if not self._feed(data[:room]):
                            return
                    if self._head_bytes:  # the same head, still not ended
                        self._refuse(431, "Request Header Fields Too Large",
                                     f"the request head is larger than "
                                     f"{limits.max_header_bytes} bytes (--max-header-bytes)")
                    else:
                        self.data_received(data[room:])
                    return
                self._head_bytes += len(data)
            if not self._feed(data):
                return
            if self._head_bytes and self._head_timer is None:
                # A head arrives in pieces: from its first byte, it has header_timeout_s.
                self._head_timer = self.loop.call_later(limits.header_timeout_s,
                                                        self._head_late)
            elif self._head_bytes is None and self._body_timer is None:
                self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_late)

        def _feed(self, data: bytes) -> bool:
            """Parses `data`; False once the connection is refused or closing."""
            base.data_received(self, data)
            if self._refused or self.transport.is_closing():
                return False
            if self._too_many_headers:
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request has more than {limits.max_headers} header lines "
                             "(--max-headers)")
                return False
            return True

        # -- the parser's callbacks
        def on_header(self, name: bytes, value: bytes) -> None:
            if len(self.headers) < limits.max_headers:
                base.on_header(self, name, value)
            else:
                self._too_many_headers = True  # refused once the parser returns

        def on_headers_complete(self) -> None:
            if self._too_many_headers:
                return
            self._head_bytes = None
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            base.on_headers_complete(self)

        def on_body(self, body: bytes) -> None:
            if not self._too_many_headers:
                base.on_body(self, body)

        def on_message_complete(self) -> None:
            if self._too_many_headers:
                return
            self._head_bytes = 0
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            base.on_message_complete(self)

        # -- the deadlines and refusals
        def _head_late(self) -> None:
            self._head_timer = None
            self._refuse(408, "Request Timeout",
                         f"the request head did not arrive within {limits.header_timeout_s:g} "
                         "s (--header-timeout-s)")

        def _body_late(self) -> None:
            self._body_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # the handler answers (408 if it reads the body)
            else:  # the answer is out and the body still comes: cut it off
                self._refuse(0, "", "")

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        def _refuse(self, status: int, reason: str, message: str, extra=()) -> None:
            """Answers `status` (0: nothing) unless a response is under way, then closes."""
            self._refused = True
            self._cancel_timers()
            if self.cycle is not None and not self.cycle.response_complete:
                # A pipelined request behind one being answered: close after that answer.
                self.cycle.keep_alive = False
                return
            if status:
                log.info("%s %d: %s", self.client, status, message)
                self.transport.write(refusal(status, reason, message, extra))
            if self.flow is not None:
                self.flow.resume_reading()  # drain what the client still sends
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

    return BoundedHttpToolsProtocol


def config_options(limits: HttpLimits) -> dict:
    """The `uvicorn.Config` arguments that apply `limits`: `http=` and h11's stand-ins."""
    http = protocol_class(limits)
    if http != "h11":
        # No WebSocket routes: an upgrade request is answered as plain HTTP, and
        # the connection stays this protocol's (and under its deadlines).
        return {"http": http, "ws": "none"}
    log.warning("httptools is not installed: request heads are bounded by h11 and "
                "connections by uvicorn's limit_concurrency, without header deadlines")
    return {"http": "h11", "ws": "none", "h11_max_incomplete_event_size": limits.max_header_bytes,
            "limit_concurrency": limits.max_connections}
