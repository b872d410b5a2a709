"""What `catsdogs serve` is told: one ServeConfig whose fields are the command's flags.

Each field is a `setting(...)` (catsdogs/config.py): its help is its `--flag` help and its unit,
in one place, as for every other command. The values are checked when the config is made
(finite, in range: a flag's one `error:` line), and the app and the server read what they need
from its properties (bytes, seconds, the batching, the Host names). No FastAPI or Keras here:
`catsdogs serve --help` stays quick.
"""

import dataclasses
import math
import os

from catsdogs.config import flag_name, setting
from catsdogs.errors import CatsDogsError
from catsdogs.serve.batching import BatchingConfig

# the default --max-queue, in batches: one batch admitted while one is in the model. Measured
# (bench/RESULTS.md, "Under overload: the queue's length"): 1 batch answered as many requests
# as 2 under a 2.5x overload, at half the latency (p99 654 against 988 ms)
QUEUE_BATCHES = 1
# field -> (lowest, highest, whether the lowest itself is allowed); every value must be finite
RANGES = {
    "port": (1, 65535, True),
    "max_batch": (1, 100_000, True),
    "batch_wait_ms": (0, 60_000, True),
    "max_upload_mb": (0.001, 1_000_000, True),
    "max_inflight_mb": (0.001, 1_000_000, True),
    "max_queue": (1, 1_000_000, True),
    "max_connections": (1, 1_000_000, True),
    "drain_seconds": (0, 86_400, True),
    "header_timeout": (0, 3600, False),
    "body_timeout": (0, 3600, False),
    "idle_timeout": (0, 3600, False),
    "workers": (1, 256, True),
}
NOT_FLAGS = ("max_instances", "decode_workers")  # fixed by the code, not the command line


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Everything `catsdogs serve` is told; the defaults suit one machine on a trusted network."""

    host: str = setting("127.0.0.1", "address to listen on; 0.0.0.0 for other machines")
    port: int = setting(8501, "(port) TF Serving's REST port")
    name: str = setting("catsdogs", "model name in the URLs, as TF Serving's --model_name")
    api_key: str | None = setting(None, "require this key in the X-API-Key header (everything "
                                        "but the page's own files)")
    allowed_hosts: str | None = setting(
        None, "(names) without --api-key: more Host header names to answer, as "
              "pets.lan,10.0.0.5 (*.example.com and * as in Starlette) [default: localhost, "
              "127.0.0.1, [::1] and --host]")
    max_batch: int = setting(32, "(images) per model call at most; 1 turns batching off")
    batch_wait_ms: float = setting(5.0, "(milliseconds) how long a request waits for others "
                                        "to batch with")
    max_upload_mb: float = setting(20.0, "(MB) largest request body; larger ones get 413 "
                                         "before they are read")
    max_queue: int | None = setting(None, "(requests) model requests admitted at once "
                                          "(reading, decoding, waiting, in the model); more "
                                          "get 503 + Retry-After [default: --max-batch]")
    max_inflight_mb: float = setting(64.0, "(MB) request bytes (bodies and their decoded "
                                           "pixels) held at once; more get 503 + Retry-After; "
                                           "at least --max-upload-mb")
    max_connections: int = setting(1000, "(connections) open (or requests running) at once; "
                                         "more get 503 + Retry-After")
    drain_seconds: float = setting(30.0, "(seconds) on SIGTERM or Ctrl-C, time to answer the "
                                         "admitted requests before exiting")
    header_timeout: float = setting(10.0, "(seconds) a connection has to send a request's "
                                          "headers, from connecting or the last answer; then "
                                          "it is closed")
    body_timeout: float = setting(30.0, "(seconds) a request has to send its body once its "
                                        "headers are in; then 408 and the connection closed")
    idle_timeout: float = setting(5.0, "(seconds) an idle connection is kept between requests "
                                       "(uvicorn's keep-alive)")
    workers: int = setting(1, "(processes) server processes sharing the port, each with its "
                              "own copy of the model, 1/N of the cores for it and 1/N of "
                              "--max-queue, --max-inflight-mb and --max-connections: more of "
                              "the machine kept busy for the memory of N models "
                              "(docs/serving.md, \"Several processes\")")
    max_instances: int = 64  # (images) per request
    decode_workers: int = min(4, os.cpu_count() or 1)  # (threads) parsing and decoding bodies

    def __post_init__(self):
        for name, (low, high, low_allowed) in RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            above_low = value >= low if low_allowed else value > low
            if not (math.isfinite(value) and above_low and value <= high):
                raise CatsDogsError(f"bad value for --{flag_name(name)}: expected a number "
                                    f"{'from' if low_allowed else 'over'} {_plain(low)} to "
                                    f"{_plain(high)}, received {value}")
        if self.api_key is not None and not self.api_key.strip():  # `--api-key "$KEY"`, unset
            raise CatsDogsError("bad value for --api-key: it is empty, so every request would "
                                "be answered without a key", fix="give a key (e.g. from "
                                "`python -c 'import secrets; print(secrets.token_urlsafe())'`), "
                                "or drop --api-key")
        if self.max_upload_mb > self.max_inflight_mb:
            raise CatsDogsError(f"bad value for --max-upload-mb: {self.max_upload_mb:g} is over "
                                f"--max-inflight-mb {self.max_inflight_mb:g}",
                                fix="one largest body must fit: raise --max-inflight-mb")

    def per_worker(self):
        """The ServeConfig each of `workers` processes runs with: its share of the bounds on
        requests, bytes and connections (rounded up: a share is never 0), so the server as a
        whole admits what the flags say, and one process (workers 1) is this config itself.
        A share of --max-inflight-mb is at least one largest body (--max-upload-mb), so the
        defaults suit any count; the start line prints the total that gives."""
        if self.workers == 1:
            return self
        return dataclasses.replace(
            self, workers=1, max_queue=math.ceil(self.queue_limit / self.workers),
            max_inflight_mb=max(self.max_inflight_mb / self.workers, self.max_upload_mb),
            max_connections=math.ceil(self.max_connections / self.workers))

    @property
    def max_upload_bytes(self):
        return round(self.max_upload_mb * 1e6)

    @property
    def max_inflight_bytes(self):
        return round(self.max_inflight_mb * 1e6)

    @property
    def batching(self):
        return BatchingConfig(self.max_batch, self.batch_wait_ms / 1000)

    @property
    def queue_limit(self):
        return self.max_queue or QUEUE_BATCHES * self.max_batch

    @property
    def host_names(self):
        """The Host header names a server without an API key answers (hosts.py)."""
        from catsdogs.serve.hosts import allowed_hosts

        extra = (self.allowed_hosts or "").split(",")
        return allowed_hosts(self.host, tuple(name.strip() for name in extra if name.strip()))


def _plain(number):
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"
