"""Bounds on what one connection's HTTP parser may hold, which llhttp (httptools) lacks.

uvicorn's httptools protocol parses every request in a read at once: a client can pipeline
thousands of small requests in one 256 KiB read, each queued with its headers until the ones
before it are answered, and llhttp accepts headers of any size (h11 refused more than 16 KiB;
uvicorn's h11 protocol also parsed one request at a time). Neither passes through the app's
admission bounds (admission.py), so the server's printed memory bound would not hold. This
protocol refuses headers over MAX_HEAD_BYTES (431) and stops reading a connection that
pipelines more than MAX_PIPELINED requests ahead of its answers: the requests already parsed
are answered, then the connection closes. A request that asks to switch protocols is
answered as plain HTTP and its connection closed after it (llhttp stops parsing at an
upgrade, so anything sent behind it would never be read).
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 2**10  # request line and headers: h11's limit (max_incomplete_event_size)
MAX_PIPELINED = 8  # requests parsed and waiting behind the one being answered


class ParsingRefused(Exception):
    """A request the parser stops at, with the status it is answered with (refusals.py) when
    no earlier request on the connection is still waiting for its answer."""

    status = 400


class HeadTooLarge(ParsingRefused):
    """A request's line and headers are over MAX_HEAD_BYTES."""

    status = 431


class PipelineTooDeep(ParsingRefused):
    """More than MAX_PIPELINED requests are waiting on one connection."""


class BoundedParsing(HttpToolsProtocol):
    """uvicorn's httptools protocol with the parser's memory bounded (see the module)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_bytes = 0
        self.stopped = False  # the parser failed or was stopped: nothing more is read

    def data_received(self, data):
        if not self.stopped:
            super().data_received(data)

    def on_message_begin(self):
        self.head_bytes = 0
        super().on_message_begin()

    def on_url(self, url):
        self._count_head(url)
        super().on_url(url)

    def on_header(self, name, value):
        self._count_head(name, value)
        super().on_header(name, value)

    def on_headers_complete(self):
        if len(self.pipeline) >= MAX_PIPELINED:
            raise PipelineTooDeep(f"over {MAX_PIPELINED} requests sent ahead of their answers")
        super().on_headers_complete()
        if self.parser.should_upgrade() and self.cycle is not None:
            self.cycle.keep_alive = False  # llhttp reads nothing after an upgrade request

    def send_400_response(self, msg):
        # the parser failed (uvicorn's `except httptools.HttpParserError`) and cannot go on; a
        # request parsed before the failure is still to be answered: answer it (and those
        # queued behind it), then close, rather than let the refusal overtake its answer
        self.stopped = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def _count_head(self, *parts):
        self.head_bytes += sum(len(part) for part in parts)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"request line and headers over {MAX_HEAD_BYTES // 1024} KiB")
