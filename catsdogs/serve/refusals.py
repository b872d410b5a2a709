"""uvicorn's own refusals in the server's one error shape ({"error": ...}, TF Serving's).

Two answers never reach the app, so its handlers cannot shape them: the 400 uvicorn writes
when its parser (llhttp, through httptools) cannot parse a request (`send_400_response`), and
the 503 its `service_unavailable` app sends past `limit_concurrency` (the server's
--max-connections). Both are plain text in uvicorn. This protocol writes the first as the app
writes its refusals (errors.error_response), and checks the limit itself (as uvicorn does:
open connections or running requests at the limit) to answer the second as every other 503:
JSON with Retry-After (errors.overloaded).
"""

import functools
import sys

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from catsdogs.serve.errors import ServeError, error_response, overloaded
from catsdogs.serve.parsing import ParsingRefused


async def over_connection_limit(limit, scope, receive, send):
    """The ASGI app (with `limit` bound) answering a request past --max-connections: uvicorn's
    service_unavailable in the server's shape; the connection is closed after it, as there."""
    error = overloaded(f"over capacity: {limit:,} connections or requests at once")
    error.headers["Connection"] = "close"
    await error_response(error)(scope, receive, send)


class ShapedRefusals(HttpToolsProtocol):
    """uvicorn's HTTP protocol whose malformed-request 400 and connection-limit 503 are JSON."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # checked in on_headers_complete below; uvicorn's own check would answer in plain text
        self.connection_limit, self.limit_concurrency = self.limit_concurrency, None

    def on_headers_complete(self):
        # called once per request, as its headers are parsed: the app chosen here is the one
        # uvicorn gives that request (it reads self.app there)
        self.app = self.config.loaded_app
        limit = self.connection_limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")  # uvicorn's own line
            self.app = functools.partial(over_connection_limit, limit)
        super().on_headers_complete()

    def send_400_response(self, msg):
        # called inside uvicorn's `except httptools.HttpParserError`: llhttp's reason is at hand
        # ("Invalid method encountered"; the client's bytes are never echoed back), or the bound
        # of parsing.py a callback raised; sys.exc_info, not sys.exception (Python 3.11+): the
        # package runs on 3.10
        error = sys.exc_info()[1]
        refused = next((e for e in (error, getattr(error, "__context__", None))
                        if isinstance(e, ParsingRefused)), None)
        if refused is not None:  # a bound of parsing.py (raised in a parser callback)
            status, message = refused.status, f"request refused: {refused}"
        else:
            reason = str(error) if isinstance(error, httptools.HttpParserError) else ""
            status, message = 400, f"malformed HTTP request: {reason or msg.rstrip('.')}"
        response = error_response(ServeError(status, message, {"Connection": "close"}))
        head = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
        self.transport.write(STATUS_LINE[status] + head + b"\r\n" + response.body)
        self.transport.close()
