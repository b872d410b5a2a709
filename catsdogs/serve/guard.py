"""The outermost layer of the app: the API key, every request counted and timed, and whatever
the layers inside raise answered in the server's error shape.

A pure ASGI middleware, not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the
app in an anyio task group and passes the response through a memory stream, a cost on every
request that Starlette's own docs name as the reason to write pure ASGI middleware
(measured here: it was the largest share of the event loop's time after asyncio itself, with
a model of small photos; bench/serve.py --profile).
"""

import secrets
import time

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from catsdogs.console import log
from catsdogs.serve.errors import ServeError, error_response

CLIENT_CLOSED = 499  # nginx's status for a request whose client hung up before the answer
PUBLIC_ENDPOINTS = ("page", "static")  # answered without the API key


class Guard:
    """ASGI middleware: `api_key` (bytes or None) checked on every non-public endpoint (named by
    `endpoint_of(path)`); `metrics["requests"]` counts each answer by endpoint and status,
    `metrics["latency"]` times it; ServeError becomes its answer, a client gone 499, any other
    exception a logged 500."""

    def __init__(self, app, endpoint_of, metrics, api_key=None, header="X-API-Key"):
        self.app, self.endpoint_of, self.metrics = app, endpoint_of, metrics
        self.api_key, self.header = api_key, header
        self.header_key = header.lower().encode("latin-1")  # as ASGI gives header names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        endpoint = self.endpoint_of(scope["path"])
        status = None

        async def recorded_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gone = False
        try:
            if self.api_key and endpoint not in PUBLIC_ENDPOINTS and not self._key_matches(scope):
                raise ServeError(401, f"missing or wrong {self.header} header")
            await self.app(scope, receive, recorded_send)
        except ServeError as error:
            await self._answer(scope, receive, recorded_send, status, error_response(error))
        except ClientDisconnect:  # nobody to answer, nothing wrong here: counted, not logged
            gone = True
            await self._answer(scope, receive, recorded_send, status,
                               Response(status_code=CLIENT_CLOSED))
        except Exception as error:  # a bug: logged once with its traceback, answered, counted
            log().exception("internal error on %s %s", scope["method"], scope["path"])
            await self._answer(scope, receive, recorded_send, status, error_response(
                ServeError(500, f"internal: {type(error).__name__}")))
        finally:  # counted however it ended (cancelled at shutdown too)
            # no answer begun: the client left (499), or the server's own 500 (uvicorn's)
            code = status or (CLIENT_CLOSED if gone else 500)
            self.metrics["requests"].labels(endpoint, str(code)).inc()
            self.metrics["latency"].labels(endpoint).observe(time.perf_counter() - started)

    def _key_matches(self, scope):
        # bytes, as sent: compare_digest refuses str with non-ASCII characters
        sent = next((value for key, value in scope["headers"] if key == self.header_key), b"")
        return secrets.compare_digest(sent, self.api_key)

    @staticmethod
    async def _answer(scope, receive, send, status, response):
        """Send `response`, unless an answer has begun (then the connection ends with it)."""
        if status is None:
            await response(scope, receive, send)
