"""Bounds on what one connection's HTTP parser may hold, which llhttp (httptools) lacks.

uvicorn's httptools protocol parses every request in a read at once: a client can pipeline
thousands of small requests in one 256 KiB read, each queued with its headers until the ones
before it are answered, and llhttp accepts headers of any size (h11 refused more than 16 KiB;
uvicorn's h11 protocol also parsed one request at a time). Neither passes through the app's
admission bounds (admission.py), so the server's printed memory bound would not hold. This
protocol refuses heads over MAX_HEAD_BYTES (431; a header line that never ends included) and
stops reading a connection that pipelines more than MAX_PIPELINED requests ahead of its
answers, or a body over QUEUED_BODY_BYTES with one: the requests already parsed are answered,
then the connection closes. A request that asks to switch protocols is answered as plain
HTTP and its connection closed after it; nothing sent behind it is read.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 2**10  # request line and headers: h11's limit (max_incomplete_event_size)
MAX_PIPELINED = 8  # requests parsed and waiting behind the one being answered
# what one header costs beyond its bytes once uvicorn holds it (a tuple, two bytes objects, the
# lower-cased name): charged against MAX_HEAD_BYTES, so many tiny headers count for what they
# hold. A head then holds at most about 2 x MAX_HEAD_BYTES of memory
HEADER_OVERHEAD = 100
# body bytes a request waiting behind others may receive before its turn (uvicorn's own pause
# past 64 KiB is undone each time an earlier answer completes)
QUEUED_BODY_BYTES = 64 * 2**10


class ParsingRefused(Exception):
    """A request the parser stops at, with the status it is answered with (refusals.py) when
    no earlier request on the connection is still waiting for its answer."""

    status = 400


class HeadTooLarge(ParsingRefused):
    """A request's line and headers are over MAX_HEAD_BYTES."""

    status = 431


def head_too_large():
    return HeadTooLarge(f"request line and headers over {MAX_HEAD_BYTES // 1024} KiB")


class PipelineTooDeep(ParsingRefused):
    """More than MAX_PIPELINED requests are waiting on one connection."""


class BoundedParsing(HttpToolsProtocol):
    """uvicorn's httptools protocol with the parser's memory bounded (see the module)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_bytes = 0  # the head's parts the parser has handed over, each charged
        self.open_head_bytes = 0  # reads wholly inside a head still open (a line not ended)
        self.in_head = False
        self.stopped = False  # the parser failed or was stopped: nothing more is read

    def data_received(self, data):
        if self.stopped:
            return
        head_was_open = self.in_head
        super().data_received(data)
        if head_was_open and self.in_head and not self.stopped:
            # httptools keeps a header line in its own buffer until the line ends: count the
            # reads that fell inside it, so a line that never ends is refused too
            self.open_head_bytes += len(data)
            if self.open_head_bytes > MAX_HEAD_BYTES:
                try:  # refused as a parser callback's error is: inside its `except`
                    raise head_too_large()
                except HeadTooLarge:
                    self.send_400_response("")

    def on_message_begin(self):
        self.head_bytes = self.open_head_bytes = 0
        self.in_head = True
        super().on_message_begin()

    def on_url(self, url):
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name, value):
        self._count_head(len(name) + len(value) + HEADER_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self):
        self.in_head = False
        if len(self.pipeline) >= MAX_PIPELINED:
            raise PipelineTooDeep(f"over {MAX_PIPELINED} requests sent ahead of their answers")
        super().on_headers_complete()
        if self.parser.should_upgrade() and self.cycle is not None:
            self.cycle.keep_alive = False  # answered as plain HTTP, then the connection closes
            self.stopped = True  # nothing sent behind an upgrade request is read

    def on_body(self, body):
        if self.pipeline and len(self.cycle.body) + len(body) > QUEUED_BODY_BYTES:
            raise PipelineTooDeep(f"a body over {QUEUED_BODY_BYTES // 1024} KiB sent ahead of "
                                  f"the answers before it")
        super().on_body(body)

    def send_400_response(self, msg):
        # the parser failed (uvicorn's `except httptools.HttpParserError`) and cannot go on.
        # When the failure follows a whole request still to be answered (the next request's
        # head, or bytes that are no HTTP), answer that one and those queued before it, then
        # close, rather than let the refusal overtake their answers; when it is in a request's
        # own body, or no request waits, refuse at once
        self.stopped = True
        waiting = self.cycle is not None and not self.cycle.response_complete
        if waiting and not self.cycle.more_body:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def _count_head(self, size):
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            raise head_too_large()
