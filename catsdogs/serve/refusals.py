"""uvicorn's own refusals in the server's one error shape ({"error": ...}, TF Serving's).

Two answers never reach the app, so its handlers cannot shape them: the 400 uvicorn writes
when h11 cannot parse a request (`send_400_response`), and the 503 its `service_unavailable`
app sends past `limit_concurrency` (the server's --max-connections). Both are plain text in
uvicorn. This protocol writes the first as the app writes its refusals (errors.error_response),
and checks the limit itself (as uvicorn does: open connections or running requests at the
limit) to answer the second as every other 503: JSON with Retry-After (errors.overloaded).
"""

import functools
import re
import sys

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from catsdogs.serve.errors import ServeError, error_response, overloaded

ECHOED_BYTES = re.compile(r":? (?:bytearray\()?b['\"]")  # where h11 quotes the request's bytes


async def over_connection_limit(limit, scope, receive, send):
    """The ASGI app (with `limit` bound) answering a request past --max-connections: uvicorn's
    service_unavailable in the server's shape; the connection is closed after it, as there."""
    error = overloaded(f"over capacity: {limit:,} connections or requests at once")
    error.headers["Connection"] = "close"
    await error_response(error)(scope, receive, send)


class ShapedRefusals(H11Protocol):
    """uvicorn's h11 protocol whose malformed-request 400 and connection-limit 503 are JSON."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # checked in handle_events below; uvicorn's own check would answer in plain text
        self.connection_limit, self.limit_concurrency = self.limit_concurrency, None

    def handle_events(self):
        # h11 yields at most one new request per call (it pauses until that one is answered),
        # so the app chosen here is the one uvicorn gives the request this call may start
        self.app = self.config.loaded_app
        limit = self.connection_limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")  # uvicorn's own line
            self.app = functools.partial(over_connection_limit, limit)
        super().handle_events()

    def send_400_response(self, msg):
        # called inside uvicorn's `except h11.RemoteProtocolError`: h11's reason is at hand
        # ("illegal request line: bytearray(b'...')"; the client's bytes are not echoed back);
        # sys.exc_info, not sys.exception (Python 3.11+): the package runs on 3.10
        error = sys.exc_info()[1]
        reason = ECHOED_BYTES.split(str(error), maxsplit=1)[0] \
            if isinstance(error, h11.RemoteProtocolError) else ""
        response = error_response(ServeError(400, f"malformed HTTP request: "
                                                  f"{reason or msg.rstrip('.')}",
                                             {"Connection": "close"}))
        for event in (h11.Response(status_code=400, headers=response.raw_headers,
                                   reason=STATUS_PHRASES[400]),
                      h11.Data(data=response.body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
