"""Admission: what the server takes on is decided at the door, before the body is read.

Three bounds keep latency and memory bounded whatever the number of clients:

- `max_queue`: model requests (POSTs) admitted at once, from arrival to answer (reading,
  decoding, waiting for the model, in it). Past it a request is shed at once with 503 and
  Retry-After, as TF Serving answers UNAVAILABLE when its batching queue is full, instead of
  waiting in an unbounded queue: the accepted ones keep a bounded latency, the rest retry.
- `max_inflight_bytes`: bytes held for admitted requests: each body (its Content-Length
  reserved on arrival, a chunked body counted as it streams) and the pixels it decodes to
  (reserved by the handler through the request's `Ticket`). Past it: 503 and Retry-After.
- `max_body_bytes`: one body; over it, 413 before the rest is read (from Content-Length, or
  counted as `receive()` yields a chunked body's pieces).
- `body_timeout`: seconds from admission until the whole body is in; past it, 408 and the
  connection closed, so a client dribbling a body holds neither a slot nor bytes for long.

While draining (the server was told to stop), new model requests are shed with 503 and the
admitted ones are answered. A pure ASGI middleware, not `@app.middleware("http")`: it sees
`receive()` itself, so it can count a streaming body and refuse before the app buffers it.
"""

import asyncio

from catsdogs.serve.errors import ServeError, error_response, overloaded

TICKET = "catsdogs.ticket"  # the scope key where the handler finds its request's Ticket


class Gate:
    """The shared admission state of one app: limits, counts, the draining flag.

    Touched only from the event loop (no locks needed); `on_shed(reason)` counts refusals and
    `on_change(admitted, inflight_bytes)` hears every change of the two counts (the gauges of
    /metrics, which several server processes add up: no read-at-scrape-time callback there).
    """

    def __init__(self, max_queue, max_inflight_bytes, max_body_bytes, on_shed=None,
                 on_change=None):
        if max_queue < 1 or max_inflight_bytes < max_body_bytes:
            raise ValueError(f"expected max_queue >= 1 and max_inflight_bytes >= max_body_bytes."
                             f" Received: max_queue={max_queue}, max_inflight_bytes="
                             f"{max_inflight_bytes}, max_body_bytes={max_body_bytes}")
        self.max_queue, self.max_inflight_bytes = max_queue, max_inflight_bytes
        self.max_body_bytes = max_body_bytes
        self.on_shed = on_shed or (lambda reason: None)
        self.on_change = on_change or (lambda admitted, inflight_bytes: None)
        self.admitted = 0
        self.inflight_bytes = 0
        self.draining = False

    def refusal(self, reserve):
        """The 503 for a request that would need `reserve` bytes now, or None to admit it."""
        if self.draining:
            reason, message = "draining", "the server is shutting down; send to another replica"
        elif self.admitted >= self.max_queue:
            reason, message = "queue", (f"over capacity: {self.max_queue} requests already "
                                        f"waiting for the model")
        elif self.inflight_bytes + reserve > self.max_inflight_bytes:
            reason, message = "bytes", (f"over capacity: {self.max_inflight_bytes:,} request "
                                        f"bytes already in flight")
        else:
            return None
        self.on_shed(reason)
        return overloaded(message)

    def changed(self):
        self.on_change(self.admitted, self.inflight_bytes)


class Ticket:
    """One admitted request's share of the in-flight bytes, given back whole when it ends."""

    def __init__(self, gate):
        self.gate, self.bytes = gate, 0

    def reserve(self, size):
        """Hold `size` more bytes for this request; 503 (ServeError) when the budget is spent."""
        gate = self.gate
        if gate.inflight_bytes + size > gate.max_inflight_bytes:
            gate.on_shed("bytes")
            raise overloaded(f"over capacity: {gate.max_inflight_bytes:,} request bytes "
                             f"already in flight")
        gate.inflight_bytes += size
        self.bytes += size
        gate.changed()

    def release(self):
        self.gate.inflight_bytes -= self.bytes
        self.bytes = 0
        self.gate.changed()


class Admission:
    """ASGI middleware applying a `Gate` to every POST (see the module docstring)."""

    def __init__(self, app, gate, body_timeout=None):
        self.app, self.gate, self.body_timeout = app, gate, body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        gate = self.gate
        length = _content_length(scope)
        if length is not None and length > gate.max_body_bytes:
            return await _answer(scope, receive, send, _too_large(gate.max_body_bytes))
        refusal = gate.refusal(length or 0)
        if refusal is not None:  # the body is never read: uvicorn discards it
            return await _answer(scope, receive, send, refusal)
        ticket = Ticket(gate)
        ticket.reserve(length or 0)
        gate.admitted += 1
        gate.changed()
        scope[TICKET] = ticket
        received, body_done = 0, False
        deadline = None if self.body_timeout is None else \
            asyncio.get_running_loop().time() + self.body_timeout

        async def counted_receive():
            nonlocal received, body_done
            if body_done or deadline is None:  # after the body: a disconnect, waited for freely
                message = await receive()
            else:
                message = await _before(receive(), deadline, self.body_timeout)
            body_done = body_done or not message.get("more_body", False)
            size = len(message.get("body", b""))
            received += size
            if received > gate.max_body_bytes:  # a chunked body, or one longer than it said
                raise _too_large(gate.max_body_bytes)
            if length is None:
                ticket.reserve(size)
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:
            gate.admitted -= 1
            ticket.release()  # and tells the gauges of both counts


def _content_length(scope):
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _before(waiting, deadline, timeout):
    """`await waiting`, or 408 (and the connection closed) once the loop's clock passes
    `deadline`."""
    try:
        return await asyncio.wait_for(waiting, deadline - asyncio.get_running_loop().time())
    except TimeoutError:
        raise ServeError(408, f"request body not received within {timeout:g} s",
                         {"Connection": "close"}) from None


def _too_large(limit):
    return ServeError(413, f"request body over {limit:,} bytes")


async def _answer(scope, receive, send, error):
    await error_response(error)(scope, receive, send)
