"""Serve a model over HTTP: TensorFlow Serving's REST API, a web page, Prometheus metrics.

    catsdogs serve runs/resnet-catsdogs-20261124-142544           # http://127.0.0.1:8501/
    catsdogs serve model.keras --port 9000 --name pets
    catsdogs serve RUN_DIR --host 0.0.0.0 --api-key "$KEY"         # reachable by others
    catsdogs serve RUN_DIR --allowed-hosts pets.lan                # key-less, by that name

Open the URL for the page (drop photos, see classes, Grad-CAM, the model's curves). Programs
POST {"instances": [{"b64": "..."}]} to /v1/models/NAME:predict as to TensorFlow Serving.
Concurrent requests are batched into one model call (--max-batch, --batch-wait-ms).
Past --max-queue requests or --max-inflight-mb of request bytes, requests get 503 with
Retry-After at once; the start line prints the peak memory those bounds allow. SIGTERM or
Ctrl-C drains: readiness turns UNAVAILABLE, admitted requests are answered, exit 0 within
--drain-seconds (docs/serving.md). Without --api-key, only requests whose Host header names
localhost, 127.0.0.1, [::1], --host or --allowed-hosts are answered (DNS rebinding).
Connections are closed when headers take over --header-timeout, a body over --body-timeout
(408), or when idle over --idle-timeout.
"""

import math

from catsdogs.commands.common import add_model_flags, model_options
from catsdogs.config import command_parser
from catsdogs.errors import CatsDogsError, command_main


def build_parser():
    parser = command_parser("serve", __doc__)
    add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for other machines [default: 127.0.0.1]")
    parser.add_argument("--port", type=int, default=8501, help="[default: 8501, TF Serving's REST port]")
    parser.add_argument("--name", default="catsdogs", help="model name in the URLs [default: catsdogs]")
    parser.add_argument("--api-key", help="require this key in the X-API-Key header "
                                          "(everything but the page's own files)")
    parser.add_argument("--allowed-hosts", metavar="NAMES", type=_names,
                        help="without --api-key: more Host header names to answer, as "
                             "pets.lan,10.0.0.5 (*.example.com and * as in Starlette) "
                             "[default: localhost, 127.0.0.1, [::1] and --host]")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="images per model call at most; 1 turns batching off [default: 32]")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long a request waits for others to batch with [default: 5]")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="largest request body; larger ones get 413 before they are read "
                             "[default: 20]")
    parser.add_argument("--max-queue", type=int,
                        help="model requests admitted at once (reading, decoding, waiting, in "
                             "the model); more get 503 + Retry-After [default: 2 x --max-batch]")
    parser.add_argument("--max-inflight-mb", type=float, default=64.0,
                        help="request bytes (bodies and their decoded pixels) held at once; "
                             "more get 503 + Retry-After; at least --max-upload-mb [default: 64]")
    parser.add_argument("--max-connections", type=int, default=1000,
                        help="open connections (or requests running) at once; more get "
                             "503 + Retry-After [default: 1000]")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM or Ctrl-C, time to answer the admitted requests "
                             "before exiting [default: 30]")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a connection has to send a request's headers, from "
                             "connecting or the last answer; then it is closed [default: 10]")
    parser.add_argument("--body-timeout", type=float, default=30.0,
                        help="seconds a request has to send its body once its headers are in; "
                             "then 408 and the connection closed [default: 30]")
    parser.add_argument("--idle-timeout", type=float, default=5.0,
                        help="seconds an idle connection is kept between requests (uvicorn's "
                             "keep-alive) [default: 5]")
    return parser


def _names(text):
    return tuple(name.strip() for name in text.split(",") if name.strip())


# flag -> (lowest, highest, whether the lowest itself is allowed); every value must be finite
FLAG_RANGES = {
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
}


def _plain(number):
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def check_flags(args):
    """CatsDogsError naming the first flag whose value is not finite or out of its range."""
    for name, (low, high, low_allowed) in FLAG_RANGES.items():
        value = getattr(args, name)
        if value is None:
            continue
        above_low = value >= low if low_allowed else value > low
        if not (math.isfinite(value) and above_low and value <= high):
            flag = "--" + name.replace("_", "-")
            raise CatsDogsError(f"bad value for {flag}: expected a number "
                                f"{'from' if low_allowed else 'over'} {_plain(low)} to "
                                f"{_plain(high)}, received {value}")
    if args.max_upload_mb > args.max_inflight_mb:
        raise CatsDogsError(f"bad value for --max-upload-mb: {args.max_upload_mb:g} is over "
                            f"--max-inflight-mb {args.max_inflight_mb:g}",
                            fix="one largest body must fit: raise --max-inflight-mb")


def serve_config(args):
    from catsdogs.serve.app import ServeConfig
    from catsdogs.serve.batching import BatchingConfig
    from catsdogs.serve.hosts import allowed_hosts

    check_flags(args)
    return ServeConfig(name=args.name, api_key=args.api_key,
                       allowed_hosts=allowed_hosts(args.host, args.allowed_hosts or ()),
                       header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                       idle_timeout=args.idle_timeout,
                       max_upload_bytes=int(args.max_upload_mb * 1e6),
                       batching=BatchingConfig(args.max_batch, args.batch_wait_ms / 1000),
                       max_queue=args.max_queue,
                       max_inflight_bytes=int(args.max_inflight_mb * 1e6),
                       max_connections=args.max_connections)


def warm_up(classifier, config):
    """One model call at the largest batch the server will make (tracing, allocation), so the
    first clients do not pay for it and the memory measured next includes it."""
    import numpy as np

    largest = max(config.batching.max_batch, config.max_instances)
    classifier.probabilities(np.zeros((largest, *classifier.image_size, 3), np.uint8))


def _run(args):
    from catsdogs.console import log
    from catsdogs.inference.classifier import load
    from catsdogs.serve.app import create_app
    from catsdogs.serve.drain import serve
    from catsdogs.serve.memory import describe_bound, memory_bound, process_memory

    config = serve_config(args)
    classifier = load(args.model, **model_options(args))
    app = create_app(classifier, config)
    warm_up(classifier, config)
    bound, terms = memory_bound(process_memory()["VmRSS"], config, classifier.image_size)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {classifier.source} as '{args.name}' on http://{host}:{args.port}/ "
          f"(REST: /v1/models/{args.name}:predict)", flush=True)
    print(f"Admitting {config.queue_limit} model requests and "
          f"{config.max_inflight_bytes / 1e6:g} MB at once (more: 503 + Retry-After); "
          f"{describe_bound(bound, terms)}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        log().warning("listening beyond this machine without --api-key: anyone who can reach "
                      "the port can use the model")
    serve(app, args.host, args.port, args.drain_seconds, config)
    return 0


main = command_main(build_parser, _run)
