"""Serve a model over HTTP: TensorFlow Serving's REST API, a web page, Prometheus metrics.

    catsdogs serve runs/resnet-catsdogs-20261124-142544           # http://127.0.0.1:8501/
    catsdogs serve model.keras --port 9000 --name pets
    catsdogs serve RUN_DIR --host 0.0.0.0 --api-key "$KEY"         # reachable by others

Open the URL for the page (drop photos, see classes, Grad-CAM, the model's curves). Programs
POST {"instances": [{"b64": "..."}]} to /v1/models/NAME:predict as to TensorFlow Serving.
Concurrent requests are batched into one model call (--max-batch, --batch-wait-ms).
Past --max-queue requests or --max-inflight-mb of request bytes, requests get 503 with
Retry-After at once; the start line prints the peak memory those bounds allow. SIGTERM or
Ctrl-C drains: readiness turns UNAVAILABLE, admitted requests are answered, exit 0 within
--drain-seconds (docs/serving.md).
"""

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
                        help="open connections at once; more get uvicorn's 503 [default: 1000]")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM or Ctrl-C, time to answer the admitted requests "
                             "before exiting [default: 30]")
    return parser


def serve_config(args):
    from catsdogs.serve.app import ServeConfig
    from catsdogs.serve.batching import BatchingConfig

    if args.max_batch < 1 or args.batch_wait_ms < 0 or not 0 < args.port < 65536:
        raise CatsDogsError("bad value for --max-batch, --batch-wait-ms or --port",
                            fix="--max-batch >= 1, --batch-wait-ms >= 0, a port in 1..65535")
    if (args.max_queue is not None and args.max_queue < 1) or args.max_connections < 1 or \
            args.drain_seconds < 0 or not 0 < args.max_upload_mb <= args.max_inflight_mb:
        raise CatsDogsError(
            "bad value for --max-queue, --max-connections, --drain-seconds, --max-upload-mb "
            "or --max-inflight-mb",
            fix="--max-queue >= 1, --max-connections >= 1, --drain-seconds >= 0, and "
                "0 < --max-upload-mb <= --max-inflight-mb (one largest body must fit)")
    return ServeConfig(name=args.name, api_key=args.api_key,
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
    serve(app, args.host, args.port, args.drain_seconds, args.max_connections)
    return 0


main = command_main(build_parser, _run)
