"""The web app: TensorFlow Serving's REST dialect, a page for people, metrics for machines.

    GET  /v1/models/NAME                 status, as TF Serving answers it
                                         (every model path also as /v1/models/NAME/versions/1)
    GET  /v1/models/NAME/metadata        inputs, outputs, class names, input size, temperature
    POST /v1/models/NAME:predict         {"instances": [{"b64": "<JPEG/PNG>"}, ...]} (row form)
                                         or {"inputs": {"image_bytes": [{"b64": ...}]}} (columns)
    POST /v1/models/NAME:classify        multipart image uploads (the page uses it); ?explain=1
                                         adds a Grad-CAM overlay per image
    GET  /v1/models/NAME/report          the run's metrics and the names of its plots
    GET  /v1/models/NAME/plots/FILE      one of those plots
    GET  /metrics  /healthz              Prometheus text; liveness
    GET  /                               the page (plain HTML, CSS and JS from the package)

A client written for TensorFlow Serving's REST API works unchanged: same paths, same JSON
shapes (`instances` -> `predictions`, `inputs` -> `outputs`, base64 as {"b64": ...}). Every
error the app answers is {"error": "..."}: 4xx for the caller's mistakes (FastAPI's validation
errors and Starlette's HTTP errors included), 503 and Retry-After when the server is full or
draining (admission.py), 500 for a bug (logged, counted in /metrics). Uploads are read under
the body limit and decoded in memory (uploads.py) by the same decoder as training, in a small
pool of worker threads, so the event loop stays free to admit and shed.
"""

import asyncio
import base64
import binascii
import dataclasses
import html
import io
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.console import log
from catsdogs.data.images import ImageTooLarge, UnreadableImage, decode_image
from catsdogs.serve.admission import TICKET, Admission, Gate
from catsdogs.serve.batching import DynamicBatcher
from catsdogs.serve.errors import ServeError, error_response
from catsdogs.serve.guard import Guard
from catsdogs.serve.hosts import AllowedHosts
from catsdogs.serve.settings import ServeConfig
from catsdogs.serve.uploads import is_multipart, parse_uploads

STATIC = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
SIGNATURE = "serving_default"  # the one signature, as TF Serving names a SavedModel's default
VERSION = "1"  # the one version, as TF Serving numbers a model's first
MODELS_PREFIX = "/v1/models/"  # TF Serving's REST paths
# (bytes) a JSON body up to this size (a photo of ~90 kB in base64) is parsed on the event
# loop: 0.35 ms for such a body here, about what a hand-off to a worker thread and back costs;
# the worst JSON of this size (128 kB of [0,0,...]: many small objects) takes several ms. Larger
# ones go to the pool, so a 20 MB body never stalls the loop
INLINE_PARSE_BYTES = 128 * 1024


def _metrics_registry():
    """Prometheus metrics of one app (its own registry: two apps in a process never mix), and
    the registry /metrics reads: that one, or, when the server runs several processes
    (PROMETHEUS_MULTIPROC_DIR set: serve/workers.py), prometheus_client's collector adding up
    what every process wrote there, so any process answers for the whole server."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    exposed = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        exposed = CollectorRegistry()
        MultiProcessCollector(exposed)
    return exposed, {
        "requests": Counter("catsdogs_requests", "Requests by endpoint and status code",
                            ["endpoint", "code"], registry=registry),
        "latency": Histogram("catsdogs_request_seconds", "Request latency", ["endpoint"],
                             registry=registry,
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        "batch": Histogram("catsdogs_batch_images", "Images per model call", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128)),
        "images": Counter("catsdogs_images", "Images classified", registry=registry),
        "shed": Counter("catsdogs_shed_requests", "Requests answered 503 at the door, by why "
                        "(queue: --max-queue full; bytes: --max-inflight-mb spent; draining)",
                        ["reason"], registry=registry),
        "admitted": Gauge("catsdogs_admitted_requests", "Model requests admitted now "
                          "(at most --max-queue)", registry=registry, multiprocess_mode="livesum"),
        "inflight": Gauge("catsdogs_inflight_bytes", "Request bytes held now (at most "
                          "--max-inflight-mb)", registry=registry, multiprocess_mode="livesum"),
    }


def _report_files(run_dir):
    """{name: path} of the plots the page's model tab may show (a fixed list: no path from a
    request ever reaches the disk)."""
    if run_dir is None:
        return {}
    candidates = [run_dir / runs.PLOTS_DIR / name for name in
                  ("training_curves.png", "reliability.png")]
    candidates += sorted(run_dir.glob(f"eval-*/{runs.PLOTS_DIR}/confusion_matrix.png"))[-1:]
    return {path.name: path for path in candidates if path.is_file()}


def _report(run_dir, calibration):
    """The run's metrics.json and calibration, read once at start and made JSON a response can
    carry (NaN and infinities as null): a damaged or edited file leaves the report without its
    metrics, with a warning, instead of failing every request for it."""
    metrics = {}
    if run_dir is not None and (run_dir / runs.METRICS_FILE).is_file():
        try:
            metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
        except (OSError, ValueError, RecursionError) as error:
            log().warning(f"{run_dir / runs.METRICS_FILE} cannot be read "
                          f"({type(error).__name__}): the report leaves its metrics out")
    return {"metrics": _finite(metrics), "calibration": _finite(calibration)}


def _finite(value):
    """`value` with every NaN or infinity (which JSON cannot carry) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


@dataclasses.dataclass(frozen=True)
class Served:
    """What the model endpoints share: the model, the settings and the machinery around it."""

    classifier: object  # inference.classifier.Classifier
    config: ServeConfig
    batcher: DynamicBatcher
    gate: Gate
    in_pool: object  # async (function, *args): runs it in the decoding threads
    threshold: float | None  # the run's "unknown" threshold, if calibrated
    run_dir: Path | None  # the run folder, for the report and its plots
    report_files: dict  # {name: path} of the plots the page may show
    report: dict  # the run's metrics and calibration, as /report answers them (_report)

    @property
    def model_path(self):
        return f"{MODELS_PREFIX}{self.config.name}"

    @property
    def pixel_bytes(self):
        return self.classifier.image_size[0] * self.classifier.image_size[1] * 3  # uint8 RGB


def create_app(classifier, config=ServeConfig(), hosts=None):
    """The FastAPI app serving `classifier` (see the module docstring for its endpoints).

    Args:
        config: a ServeConfig (settings.py).
        hosts: the Host header names answered when `config` has no API key
            (`config.host_names` for a server that listens); None: any (an app called
            in-process, as the tests do).
    """
    from fastapi import FastAPI

    registry, metrics = _metrics_registry()
    run_dir = classifier.source.parent if classifier.source.name == runs.MODEL_FILE else None
    threshold = (classifier.calibration.get("min_confidence_auto") or {}).get("threshold")

    def classify_rows(pixels):
        probabilities = classifier.probabilities(pixels)
        metrics["images"].inc(len(pixels))
        return [_row(p, classifier.class_names, threshold) for p in probabilities]

    batcher = DynamicBatcher(classify_rows, config.batching, on_batch=metrics["batch"].observe)
    decoders = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="decode")

    def gauge_counts(admitted, inflight_bytes):
        metrics["admitted"].set(admitted)
        metrics["inflight"].set(inflight_bytes)

    gate = Gate(config.queue_limit, config.max_inflight_bytes, config.max_upload_bytes,
                on_shed=lambda reason: metrics["shed"].labels(reason).inc(),
                on_change=gauge_counts)

    async def in_pool(function, *args):
        return await asyncio.get_running_loop().run_in_executor(decoders, function, *args)

    async def shutdown():
        await batcher.close()
        decoders.shutdown(wait=False, cancel_futures=True)

    served = Served(classifier, config, batcher, gate, in_pool, threshold, run_dir,
                    _report_files(run_dir), _report(run_dir, classifier.calibration))
    app = FastAPI(title="catsdogs", docs_url=None, redoc_url=None, openapi_url=None,
                  on_shutdown=[shutdown])
    app.state.batcher, app.state.gate = batcher, gate
    # inside the guard (added last, so outermost): a shed request or a refused Host is measured
    app.add_middleware(Admission, gate=gate, body_timeout=config.body_timeout)
    if hosts is not None and not config.api_key:
        app.add_middleware(AllowedHosts, hosts=hosts)
    app.add_middleware(Guard, endpoint_of=lambda path: _endpoint_of(path, served.model_path),
                       metrics=metrics, header=API_KEY_HEADER,
                       api_key=config.api_key.encode() if config.api_key else None)
    _add_error_handlers(app, served.model_path)
    _add_page_routes(app, config.name, registry)
    model_route = _model_route(app, served)
    _add_status_routes(model_route, served)
    _add_classify_routes(model_route, served)
    return app


def _add_error_handlers(app, model_path):
    """Every error as {"error": ...}: ours, Starlette's HTTP errors, FastAPI's validation; a
    path under /v1/models/ that is not the served model's says which one is served."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ServeError)
    async def refused(request, error):
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        said = str(error.detail)
        path = request.url.path
        if error.status_code == 404 and path.startswith(MODELS_PREFIX) \
                and not path.startswith(model_path):
            said = f"Servable not found for request: {path}; this server serves {model_path}"
        return JSONResponse({"error": said}, status_code=error.status_code,
                            headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error):  # FastAPI's 422 {"detail": [...]}, as TF Serving's 400
        return error_response(ServeError(400, "; ".join(
            f"{' '.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors())))


def _add_page_routes(app, name, registry):
    """The page and its files, liveness and the Prometheus metrics."""
    from fastapi.responses import HTMLResponse, Response
    from fastapi.staticfiles import StaticFiles
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    page_html = (STATIC / "index.html").read_text().replace("__MODEL_NAME__", html.escape(name))

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(page_html)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _model_route(app, served):
    """A decorator registering an endpoint at /v1/models/NAME<suffix> and at
    .../versions/1<suffix>, the two forms TF Serving answers; any other version is 404, as
    there."""
    from fastapi import Depends, Request

    name = served.config.name

    async def one_version(request: Request):  # async: a plain def runs in a thread per request
        version = request.path_params.get("version", VERSION)
        if version != VERSION:  # TF Serving's words for a version it does not have
            raise ServeError(404, f"Servable not found for request: Specific({name}, {version})")

    def model_route(method, suffix):
        def register(endpoint):
            for path in (served.model_path + suffix,
                         f"{served.model_path}/versions/{{version}}{suffix}"):
                app.add_api_route(path, endpoint, methods=[method],
                                  dependencies=[Depends(one_version)])
            return endpoint
        return register

    return model_route


def _add_status_routes(model_route, served):
    """Status (readiness), metadata, the run's report and its plots."""
    from fastapi.responses import FileResponse, JSONResponse

    classifier, config = served.classifier, served.config

    @model_route("GET", "")
    async def status():
        """Readiness, as TF Serving's model status: while draining, UNLOADING / UNAVAILABLE
        with HTTP 503, so a load balancer polling it stops sending before the port closes."""
        if served.gate.draining:
            return JSONResponse({"model_version_status": [{
                "version": VERSION, "state": "UNLOADING",
                "status": {"error_code": "UNAVAILABLE", "error_message": "draining"}}]}, 503)
        return {"model_version_status": [{"version": VERSION, "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    @model_route("GET", "/metadata")
    async def metadata():
        """TF Serving's GetModelMetadata answer, then what a catsdogs client also wants."""
        height, width = classifier.image_size
        outputs = {"probabilities": _tensor("DT_FLOAT", "probabilities",
                                            -1, len(classifier.class_names)),
                   "class_name": _tensor("DT_STRING", "class_name", -1),
                   "class_index": _tensor("DT_INT32", "class_index", -1)}
        return {"model_spec": {"name": config.name, "signature_name": "", "version": VERSION},
                "metadata": {"signature_def": {"signature_def": {SIGNATURE: {
                    "inputs": {"image_bytes": _tensor("DT_STRING", "image_bytes", -1)},
                    "outputs": outputs, "method_name": "tensorflow/serving/predict"}}}},
                "class_names": classifier.class_names, "image_size": [height, width],
                "temperature": classifier.temperature, "min_confidence": served.threshold,
                "explain": classifier.model is not None}

    @model_route("GET", "/report")
    async def report():
        return {"name": config.name, "class_names": classifier.class_names, **served.report,
                "plots": sorted(served.report_files)}

    @model_route("GET", "/plots/{file_name}")
    async def plot(file_name: str):
        if file_name not in served.report_files:
            raise ServeError(404, f"no plot {file_name!r}; see {served.model_path}/report")
        return FileResponse(served.report_files[file_name], media_type="image/png")


def _add_classify_routes(model_route, served):
    """:predict (TF Serving's JSON) and :classify (multipart uploads, the page's)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    classifier, config, in_pool = served.classifier, served.config, served.in_pool

    @model_route("POST", ":predict")
    async def predict(request: Request):
        body = await _read_body(request)
        if len(body) <= INLINE_PARSE_BYTES:  # cheaper here than a hand-off to a worker thread
            images, columnar = _parse(body, config.max_instances)
        else:
            images, columnar = await in_pool(_parse, body, config.max_instances)
        del body  # the bytes are reserved until the answer; the memory need not be
        request.scope[TICKET].reserve(len(images) * served.pixel_bytes)
        pixels = await in_pool(_decode_all, images, classifier.image_size)
        rows = await served.batcher.submit(pixels)
        if columnar:  # JSONResponse directly: FastAPI's jsonable_encoder walk is not needed
            return JSONResponse({"outputs": {key: [row[key] for row in rows] for key in rows[0]}})
        return JSONResponse({"predictions": rows})

    @model_route("POST", ":classify")
    async def classify(request: Request, explain: bool = False):
        content_type = request.headers.get("content-type", "")
        if not is_multipart(content_type):
            raise ServeError(415, "send the images as multipart/form-data")
        body = await _read_body(request)  # in memory, bounded by Admission as it streams
        files = await in_pool(parse_uploads, body, content_type, config.max_instances)
        del body
        if not files:
            raise ServeError(400, "no image uploaded: send multipart/form-data with file fields")
        names = [name for name, _ in files]
        request.scope[TICKET].reserve(len(files) * served.pixel_bytes)
        pixels = await in_pool(_decode_all, [data for _, data in files], classifier.image_size,
                               names)
        del files
        rows = await served.batcher.submit(pixels)
        for row, name in zip(rows, names):
            row["file"] = name
        if explain and classifier.model is not None:
            overlays = await asyncio.to_thread(_overlays, classifier, pixels, rows)
            for row, overlay in zip(rows, overlays):
                row["gradcam_png"] = overlay
        return {"results": rows}


def _endpoint_of(path, model_path):
    """A low-cardinality label for the metrics (never the raw path)."""
    if path == "/":
        return "page"
    if path.startswith("/static/"):
        return "static"
    if path.startswith(model_path):
        rest = re.sub(r"^/versions/[^/:]+", "", path[len(model_path):])
        return {"": "status", "/metadata": "metadata", ":predict": "predict",
                ":classify": "classify", "/report": "report"}.get(
            rest, "plots" if rest.startswith("/plots/") else "other")
    return {"/metrics": "metrics", "/healthz": "healthz"}.get(path, "other")


def _row(probabilities, class_names, threshold):
    best = int(np.argmax(probabilities))
    unknown = threshold is not None and float(probabilities[best]) < threshold
    return {"probabilities": [float(p) for p in probabilities],
            "class_name": "unknown" if unknown else class_names[best], "class_index": best,
            "classes": sorted(({"class": n, "probability": float(p)} for n, p in
                               zip(class_names, probabilities)), key=lambda c: -c["probability"]),
            "unknown": unknown}


def _tensor(dtype, name, *dims):
    """A TensorInfo as TF Serving's metadata writes it (protobuf JSON: sizes as strings)."""
    return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(size), "name": ""}
                                                     for size in dims], "unknown_rank": False},
            "name": f"{SIGNATURE}_{name}:0"}


async def _read_body(request):
    """The request body in one buffer (no list of chunks joined: one copy, not two); its size
    is bounded by Admission as it streams."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def _parse(body, max_instances):
    """Image bytes and columnar-or-not from a JSON body (in a worker: JSON and base64 are a
    request's largest costs after the model and the decoder)."""
    if not body.strip():
        raise ServeError(400, "empty request body: send JSON with \"instances\"")
    try:
        parsed = json.loads(body)
    except ValueError as error:
        raise ServeError(400, f"malformed JSON: {error}") from None
    except RecursionError:  # the C parser recurses per level of [ and {
        raise ServeError(400, "malformed JSON: nested too deeply") from None
    return _instances(parsed, max_instances)


def _instances(body, max_instances):
    """Image bytes from TF Serving's request forms, and whether the answer is columnar."""
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise ServeError(400, "expected a JSON object with \"instances\" (rows) or \"inputs\" "
                              "(columns), as TensorFlow Serving takes")
    if {"instances", "inputs"} <= set(body):
        raise ServeError(400, "only one of \"instances\" or \"inputs\" may be given")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ServeError(400, f"Serving signature name: {json.dumps(signature)} not found in "
                              f"signature def")
    columnar = "inputs" in body
    items = body["inputs"] if columnar else body["instances"]
    if columnar and isinstance(items, dict):
        items = items.get("image_bytes", next(iter(items.values()), None))
    if not isinstance(items, list) or not items:
        raise ServeError(400, "no instances: give a non-empty list of {\"b64\": ...} images")
    if len(items) > max_instances:
        raise ServeError(413, f"{len(items)} instances in one request; at most {max_instances}")
    images = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "image_bytes" in item:  # {"image_bytes": {"b64": ...}}
            item = item["image_bytes"]
        if not (isinstance(item, dict) and isinstance(item.get("b64"), str)):
            raise ServeError(400, f"instance {index}: expected {{\"b64\": \"<base64 image>\"}}")
        try:
            images.append(base64.b64decode(item["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise ServeError(400, f"instance {index}: malformed base64") from None
    return images, columnar


def _decode_all(contents, size, names=None):
    """uint8 pixels (n, h, w, 3) by the training decoder (a quarter of float32's memory while
    waiting; the model casts); the first bad image refuses the request (413 for images over
    the pixel limit, 400 for anything else unreadable)."""
    out = np.empty((len(contents), *size, 3), np.uint8)
    for index, data in enumerate(contents):
        label = names[index] if names else f"instance {index}"
        try:
            out[index] = decode_image(label, size, data)
        except UnreadableImage as error:
            raise ServeError(413 if isinstance(error, ImageTooLarge) else 400,
                             f"{label}: {error}") from None
    return out


def _overlays(classifier, pixels, rows):
    """Grad-CAM overlays, as base64 PNG, each for the class its row names (or its top class)."""
    from PIL import Image

    from catsdogs.inference.explain import overlay

    heatmaps, _ = classifier.explain(pixels, [row["class_index"] for row in rows])
    encoded = []
    for image, heatmap in zip(pixels, heatmaps):
        buffer = io.BytesIO()
        Image.fromarray(overlay(image, heatmap)).save(buffer, "PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    return encoded
