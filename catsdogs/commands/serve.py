"""Serve a model over HTTP: TensorFlow Serving's REST API, a web page, Prometheus metrics.

    catsdogs serve runs/resnet-catsdogs-20261124-142544           # http://127.0.0.1:8501/
    catsdogs serve model.keras --port 9000 --name pets
    catsdogs serve RUN_DIR --host 0.0.0.0 --api-key "$KEY"         # reachable by others

Open the URL for the page (drop photos, see classes, Grad-CAM, the model's curves). Programs
POST {"instances": [{"b64": "..."}]} to /v1/models/NAME:predict as to TensorFlow Serving.
Concurrent requests are batched into one model call (--max-batch, --batch-wait-ms).
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
                        help="largest request body [default: 20]")
    return parser


def serve_config(args):
    from catsdogs.serve.app import ServeConfig
    from catsdogs.serve.batching import BatchingConfig

    if args.max_batch < 1 or args.batch_wait_ms < 0 or not 0 < args.port < 65536:
        raise CatsDogsError("bad value for --max-batch, --batch-wait-ms or --port",
                            fix="--max-batch >= 1, --batch-wait-ms >= 0, a port in 1..65535")
    return ServeConfig(name=args.name, api_key=args.api_key,
                       max_upload_bytes=int(args.max_upload_mb * 1e6),
                       batching=BatchingConfig(args.max_batch, args.batch_wait_ms / 1000))


def _run(args):
    import uvicorn

    from catsdogs.console import log
    from catsdogs.inference.classifier import load
    from catsdogs.serve.app import create_app

    config = serve_config(args)
    classifier = load(args.model, **model_options(args))
    app = create_app(classifier, config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {classifier.source} as '{args.name}' on http://{host}:{args.port}/ "
          f"(REST: /v1/models/{args.name}:predict)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        log().warning("listening beyond this machine without --api-key: anyone who can reach "
                      "the port can use the model")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


main = command_main(build_parser, _run)
