"""The one exception a request handler raises to refuse: answered as {"error": message}, TF
Serving's error shape, with its HTTP status and any headers (Retry-After on 503)."""

RETRY_AFTER_SECONDS = 1  # what a shed request is told: a batch or two, on the machines measured


class ServeError(Exception):
    """A request the server refuses: answered as {"error": message} with `status`."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def overloaded(message):
    """503 with Retry-After: TF Serving's UNAVAILABLE, which clients and load balancers retry
    (elsewhere, or a moment later); 429 would blame one client for the whole server's load."""
    return ServeError(503, message, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def error_response(error):
    """The answer to `error`: {"error": message} as JSON, with its status and headers (the one
    renderer of every refusal: the app's, admission's and uvicorn's own, refusals.py)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": error.message}, error.status, headers=error.headers)
