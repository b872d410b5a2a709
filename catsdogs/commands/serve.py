"""Serve a model over HTTP: TensorFlow Serving's REST API, a web page, Prometheus metrics.

    catsdogs serve runs/resnet-catsdogs-20261124-142544           # http://127.0.0.1:8501/
    catsdogs serve model.keras --port 9000 --name pets
    catsdogs serve RUN_DIR --host 0.0.0.0 --api-key "$KEY"         # reachable by others
    catsdogs serve RUN_DIR --allowed-hosts pets.lan                # key-less, by that name

Open the URL for the page (drop photos, see classes, Grad-CAM, the model's curves). Programs
POST {"instances": [{"b64": "..."}]} to /v1/models/NAME:predict as to TensorFlow Serving.
Concurrent requests are batched into one model call (--max-batch, --batch-wait-ms);
--workers N runs N processes on the port, each with the model and 1/N of the cores and bounds.
Past --max-queue requests or --max-inflight-mb of request bytes, requests get 503 with
Retry-After at once; the start line prints the peak memory those bounds allow. SIGTERM or
Ctrl-C drains: readiness turns UNAVAILABLE, admitted requests are answered, exit 0 within
--drain-seconds (docs/serving.md). Without --api-key, only requests whose Host header names
localhost, 127.0.0.1, [::1], --host or --allowed-hosts are answered (DNS rebinding).
Connections are closed when headers take over --header-timeout, a body over --body-timeout
(408), or when idle over --idle-timeout.
"""

import functools

from catsdogs import config as cfg
from catsdogs.commands.common import add_model_flags, model_options
from catsdogs.config import command_parser
from catsdogs.errors import command_main
from catsdogs.serve.settings import NOT_FLAGS, ServeConfig


def build_parser():
    parser = command_parser("serve", __doc__)
    add_model_flags(parser)
    cfg.add_flags(parser, ServeConfig, skip=NOT_FLAGS)
    return parser


def serve_config(args):
    """The ServeConfig the flags give (one `error:` line for a value out of range)."""
    return ServeConfig(**cfg.given_flags(args, ServeConfig))


def warm_up(classifier, config):
    """One model call at the largest batch the server will make (tracing, allocation), so the
    first clients do not pay for it and the memory measured next includes it."""
    import numpy as np

    largest = max(config.max_batch, config.max_instances)
    classifier.probabilities(np.zeros((largest, *classifier.image_size, 3), np.uint8))


def prepare(args, config):
    """(app, classifier, memory bound, its terms) of one server process: the model loaded, the
    app made, one warm-up call, the bound measured from there. A worker of several
    (--workers) calls this in its own process (serve/workers.py)."""
    from catsdogs.inference.classifier import load
    from catsdogs.serve.app import create_app
    from catsdogs.serve.memory import memory_bound, process_memory

    classifier = load(args.model, **model_options(args))
    app = create_app(classifier, config, hosts=config.host_names)
    warm_up(classifier, config)
    bound, terms = memory_bound(process_memory()["VmRSS"], config, classifier.image_size)
    return app, classifier, bound, terms


def announce(config, source, bound, terms):
    """The start lines: where, what is admitted, the memory bound."""
    from catsdogs.console import log
    from catsdogs.serve.memory import describe_bound

    host = f"[{config.host}]" if ":" in config.host else config.host
    processes = f" by {config.workers} processes" if config.workers > 1 else ""
    print(f"Serving {source} as '{config.name}' on http://{host}:{config.port}/{processes} "
          f"(REST: /v1/models/{config.name}:predict)", flush=True)
    share = config.per_worker()
    print(f"Admitting {share.queue_limit * config.workers} model requests and "
          f"{share.max_inflight_bytes * config.workers / 1e6:g} MB at once (more: 503 + "
          f"Retry-After); {describe_bound(bound, terms)}", flush=True)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        log().warning("listening beyond this machine without --api-key: anyone who can reach "
                      "the port can use the model")


def _run(args):
    from catsdogs.serve.drain import serve
    from catsdogs.serve.ports import reserve

    config = serve_config(args)  # before the model loads: a bad flag is one line at once
    if config.workers > 1:
        from catsdogs.serve.workers import serve_workers

        return serve_workers(config, prepare, functools.partial(announce, config), args)
    with reserve(config) as listener:  # the port, before the model loads and the start lines
        app, classifier, bound, terms = prepare(args, config)
        announce(config, classifier.source, bound, terms)
        serve(app, config, listener)
    return 0


main = command_main(build_parser, _run)
