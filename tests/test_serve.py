"""catsdogs serve: TF Serving's REST shapes, the page, limits, batching, metrics."""

import asyncio
import base64
import io
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import catsdogs
from catsdogs.serve.app import ServeConfig, create_app

from conftest import SAMPLE_DATA, bomb_png_bytes, free_port

PHOTO = next((SAMPLE_DATA / "cats_and_dogs" / "validation" / "cats").glob("*.jpg"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run-like folder: an untrained seed-cifar10 two-class model with its class names,
    calibration (with an "unknown" threshold), metrics and a plot."""
    from catsdogs.models.presets import get_preset

    run = tmp_path_factory.mktemp("serve") / "run"
    (run / "plots").mkdir(parents=True)
    model = get_preset("seed-cifar10").build(2)
    model.save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    (run / "calibration.json").write_text(json.dumps(
        {"temperature": 1.5, "min_confidence_auto": {"keep": 0.95, "threshold": 0.4}}))
    (run / "metrics.json").write_text(json.dumps({"best_val_accuracy": 0.5}))
    Image.new("RGB", (40, 30), "white").save(run / "plots" / "training_curves.png")
    return run


@pytest.fixture(scope="module")
def classifier(run_dir):
    return catsdogs.load(run_dir)


@pytest.fixture
def client(classifier):
    from fastapi.testclient import TestClient

    return TestClient(create_app(classifier, ServeConfig(max_upload_mb=0.2, max_instances=4)))


def b64(data):
    return {"b64": base64.b64encode(data).decode()}


def png_bytes(colour=(200, 100, 50), size=(48, 40)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_status_and_metadata_in_tf_serving_shape(client):
    status = client.get("/v1/models/catsdogs").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = client.get("/v1/models/catsdogs/metadata").json()
    assert meta["model_spec"]["name"] == "catsdogs" and meta["class_names"] == ["cats", "dogs"]
    assert meta["image_size"] == [32, 32] and meta["temperature"] == 1.5
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature["outputs"]) == {"probabilities", "class_name", "class_index"}


def test_predict_rows_and_columns_equal_catsdogs_predict(client, classifier):
    photo = PHOTO.read_bytes()
    rows = client.post("/v1/models/catsdogs:predict",
                       json={"instances": [b64(photo), b64(png_bytes())]}).json()["predictions"]
    expected, _ = classifier.predict_folder(str(PHOTO))
    best = max(rows[0]["classes"], key=lambda c: c["probability"])
    assert best["probability"] == pytest.approx(expected[0].probability, abs=1e-6)
    assert rows[0]["class_name"] in (expected[0].predicted, "unknown")
    assert sum(rows[1]["probabilities"]) == pytest.approx(1.0)
    columns = client.post("/v1/models/catsdogs:predict",
                          json={"inputs": {"image_bytes": [b64(photo)]}}).json()["outputs"]
    assert columns["probabilities"][0] == pytest.approx(rows[0]["probabilities"])


def test_classify_takes_multipart_uploads_with_gradcam(client):
    files = [("files", ("a.jpg", PHOTO.read_bytes(), "image/jpeg")),
             ("files", ("b.png", png_bytes(), "image/png"))]
    results = client.post("/v1/models/catsdogs:classify?explain=1", files=files).json()["results"]
    assert [r["file"] for r in results] == ["a.jpg", "b.png"]
    overlay = Image.open(io.BytesIO(base64.b64decode(results[0]["gradcam_png"])))
    assert overlay.format == "PNG" and min(overlay.size) >= 224


def test_below_the_threshold_is_unknown(classifier):
    """The stored threshold, set just above and just below the photo's top probability: the
    row says "unknown" only in the first."""
    import dataclasses

    from fastapi.testclient import TestClient

    expected, _ = classifier.predict_folder(str(PHOTO))
    top = expected[0].probability
    for threshold, unknown in ((top + 0.01, True), (top - 0.01, False)):
        calibration = {**classifier.calibration, "min_confidence_auto": {"threshold": threshold}}
        app = create_app(dataclasses.replace(classifier, calibration=calibration), ServeConfig())
        row = TestClient(app).post("/v1/models/catsdogs:predict", json={
            "instances": [b64(PHOTO.read_bytes())]}).json()["predictions"][0]
        assert row["unknown"] is unknown
        assert row["class_name"] == ("unknown" if unknown else expected[0].predicted)


@pytest.mark.parametrize("request_kwargs, status, words", [
    ({"content": b""}, 400, "empty request body"),
    ({"content": b"{not json"}, 400, "malformed JSON"),
    ({"json": {"instances": [{"b64": "***"}]}}, 400, "malformed base64"),
    ({"json": {"instances": []}}, 400, "no instances"),
    ({"json": {"images": []}}, 400, "\"instances\""),
    ({"json": {"instances": [b64(b"not an image")]}}, 400, "not an image"),
    ({"json": {"instances": [b64(bomb_png_bytes())]}}, 413, "too large"),
    ({"json": {"instances": [b64(png_bytes())] * 5}}, 413, "at most 4"),
    ({"content": b"x" * 300_000}, 413, "over 200,000 bytes"),
])
def test_bad_requests_get_one_line_json_errors_and_the_server_keeps_serving(
        client, request_kwargs, status, words):
    response = client.post("/v1/models/catsdogs:predict", **request_kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error and "\n" not in error
    ok = client.post("/v1/models/catsdogs:predict", json={"instances": [b64(png_bytes())]})
    assert ok.status_code == 200


def test_classify_without_files_and_unknown_paths(client):
    assert client.post("/v1/models/catsdogs:classify", data={"x": "1"},
                       files={"note": ("n.txt", b"", "text/plain")}).status_code == 400
    assert client.post("/v1/models/catsdogs:classify", json={}).status_code == 415
    missing = client.get("/v1/models/other")
    assert missing.status_code == 404 and "error" in missing.json()
    assert client.get("/v1/models/catsdogs/plots/../../model.keras").status_code == 404


def test_api_key_guards_everything_but_the_page(classifier):
    from fastapi.testclient import TestClient

    guarded = TestClient(create_app(classifier, ServeConfig(api_key="s3cret")))
    assert guarded.get("/").status_code == 200 and guarded.get("/static/app.js").status_code == 200
    refused = guarded.get("/v1/models/catsdogs/metadata")
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["error"]
    assert guarded.get("/v1/models/catsdogs/metadata",
                       headers={"X-API-Key": "s3cret"}).status_code == 200


def test_metrics_health_report_and_page(client):
    client.post("/v1/models/catsdogs:predict", json={"instances": [b64(png_bytes())]})
    text = client.get("/metrics").text
    assert 'catsdogs_requests_total{code="200",endpoint="predict"}' in text
    assert "catsdogs_request_seconds_bucket" in text and "catsdogs_batch_images_count" in text
    assert client.get("/healthz").json() == {"status": "ok"}
    report = client.get("/v1/models/catsdogs/report").json()
    assert report["metrics"]["best_val_accuracy"] == 0.5 and report["plots"] == ["training_curves.png"]
    assert client.get("/v1/models/catsdogs/plots/training_curves.png").headers[
        "content-type"] == "image/png"
    page = client.get("/").text
    assert '<meta name="model" content="catsdogs">' in page and "/static/app.js" in page
    assert "http" not in page.replace("http-equiv", "")  # no CDN: everything from the package


def test_a_damaged_or_non_finite_report_is_served_as_json_not_a_500(run_dir, tmp_path, caplog):
    from fastapi.testclient import TestClient

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "metrics.json").write_text('{"best_val_accuracy": NaN, "curve": [1.0, Infinity]}')
    classifier = catsdogs.load(copy)
    classifier.calibration["ece_before"] = float("nan")  # fields calibration.json's check skips
    report = TestClient(create_app(classifier)).get("/v1/models/catsdogs/report")
    assert report.status_code == 200
    assert report.json()["metrics"] == {"best_val_accuracy": None, "curve": [1.0, None]}
    assert report.json()["calibration"]["ece_before"] is None
    (copy / "metrics.json").write_text('{"best_val')
    report = TestClient(create_app(classifier)).get("/v1/models/catsdogs/report")
    assert report.status_code == 200 and report.json()["metrics"] == {}
    assert "metrics.json cannot be read (JSONDecodeError)" in caplog.text


def test_concurrent_requests_are_batched_into_one_model_call(classifier):
    import httpx2

    app = create_app(classifier, ServeConfig(max_batch=64, batch_wait_ms=50))
    calls = []
    app.state.batcher.on_batch = calls.append
    body = {"instances": [b64(png_bytes())]}

    async def burst():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*(http.post("/v1/models/catsdogs:predict", json=body)
                                          for _ in range(16)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert sum(calls) == 16 and max(calls) > 1 and len(calls) < 16


# ---------------------------------------------------------------- a real browser


def browser_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return browser, driver


@pytest.mark.skipif(None in browser_paths(),
                    reason="no chromium + chromedriver (Debian: apt-get install chromium "
                           "chromium-driver; .ci/run installs them)")
def test_the_page_in_a_real_browser(classifier, tmp_path):
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(classifier), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    browser, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=412,915"):  # a phone-width screen
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "model-name").text.startswith("cats"))
        driver.find_element(By.ID, "files").send_keys(str(PHOTO))
        card = WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card"))[0]
        shown_class = card.find_element(By.CLASS_NAME, "prediction").text
        shown_probability = float(card.find_element(By.CLASS_NAME, "probability").text.split()[0])
        driver.save_screenshot(str(tmp_path / "page.png"))
        expected, _ = classifier.predict_folder(str(PHOTO), min_confidence=0.4)
        assert shown_class == expected[0].predicted
        top = max(classifier.probabilities(
            __import__("catsdogs.data.images", fromlist=["x"]).decode_image(PHOTO, (32, 32))[None])[0])
        assert shown_probability == pytest.approx(100 * top, abs=0.06)
        assert Path(tmp_path / "page.png").stat().st_size > 1000
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)
