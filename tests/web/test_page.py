"""The browser page (export/web/) in headless Chromium against onnxruntime and numpy in Python.

The page decodes with onnxruntime-web (wasm) and draws z with npy_random.js; each
test checks what it shows against the same export run by onnxruntime here.
"""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a browser, exports, about 20 s in all

THRESHOLD = 30.0  # the test server's anomaly threshold (nats)


def onnx_decode(export_dir: Path, z: np.ndarray, labels=None) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(export_dir / "decoder.onnx"),
                                   providers=["CPUExecutionProvider"])
    feeds = {"z": np.asarray(z, np.float32)}
    if labels is not None:
        feeds["label"] = np.asarray(labels, np.int32)
    return session.run(None, feeds)[0]


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1240, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    page.evaluate("() => window.kerasVae.ready")
    # The first picture of every card is drawn once the model is loaded.
    page.wait_for_function("() => window.kerasVae.last.strip !== null", timeout=30_000)
    page.errors = errors
    return page


def settle(page):
    """Waits for the page's latest action (sampling, decoding, scoring) to finish."""
    page.evaluate("() => window.kerasVae.pending")


def scored(page, act):
    """Runs `act` (a drawing or an upload) and waits for the service's answer."""
    page.evaluate("() => { window.kerasVae.last.score = null; }")
    act()
    page.wait_for_function("() => window.kerasVae.last.score !== null", timeout=10_000)


def canvas_rgba(page, canvas_id: str) -> np.ndarray:
    data = page.evaluate("""(id) => {
        const c = document.getElementById(id);
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
    }""", canvas_id)
    width, height, values = data
    return np.asarray(values, np.uint8).reshape(height, width, 4)


@pytest.fixture(scope="module")
def server(serve_page, tiny_export):
    with serve_page(tiny_export, threshold=THRESHOLD) as s:
        yield s


@pytest.fixture(scope="module")
def page(browser, server):
    page = open_page(browser, server)
    yield page
    assert page.errors == [], page.errors
    page.close()


def test_status_names_the_model(page):
    status = page.inner_text("#status")
    assert "onnxruntime-web 1.30.0 (wasm)" in status
    assert "SHA-256 checked" in status and "3-d latent space" in status
    assert "8\u00d78\u00d71 images" in status and "unconditional" in status


def test_browser_decodes_like_onnxruntime(page, tiny_export):
    z = np.random.default_rng(3).normal(size=(7, 3)).astype(np.float32) * 2
    for n in (1, 7):
        js = np.asarray(page.evaluate(
            "async ([z, n]) => Array.from(await window.kerasVae.decode(z, n))",
            [z[:n].ravel().tolist(), n]))
        ref = onnx_decode(tiny_export, z[:n])
        assert js.shape == (ref.size,)
        np.testing.assert_allclose(js.reshape(ref.shape), ref, rtol=0, atol=1e-5)
        assert ref.std() > 1e-3  # the images differ from each other: a real decode


def test_browser_prior_z_equals_numpy(page, recipes):
    for seed in ("0", "42", "2147483648", "9223372036854775807"):
        js = np.asarray(page.evaluate("(s) => Array.from(window.kerasVae.priorZ(5, s))", seed),
                        np.float32)
        ref = recipes.prior_z(5, 3, int(seed))
        np.testing.assert_array_equal(js.view(np.uint32), ref.ravel().view(np.uint32))


def test_sampled_grid_equals_onnxruntime_of_numpy_z(page, tiny_export, recipes):
    page.fill("#seed", "7")
    page.select_option("#count", "16")
    settle(page)
    page.click("#sample")
    settle(page)
    grid = page.evaluate("() => { const g = window.kerasVae.last.grid; "
                         "return {seed: g.seed, n: g.n, z: Array.from(g.z), images: Array.from(g.images)}; }")
    assert (grid["seed"], grid["n"]) == ("7", 16)
    z = recipes.prior_z(16, 3, 7)
    np.testing.assert_array_equal(np.asarray(grid["z"], np.float32), z.ravel())
    ref = onnx_decode(tiny_export, z)
    np.testing.assert_allclose(np.reshape(grid["images"], ref.shape), ref, rtol=0, atol=1e-5)
    # The canvas shows recipes.grid's picture (rounding may differ by one level).
    shown = canvas_rgba(page, "grid")
    expected = recipes.grid(ref)
    assert shown.shape[:2] == expected.shape
    assert np.abs(shown[..., 0].astype(int) - expected).max() <= 1
    assert np.all(shown[..., 3] == 255)


def test_interpolation_strip(page, tiny_export, recipes):
    page.fill("#seed-a", "3")
    page.fill("#seed-b", "11")
    page.fill("#steps", "6")
    page.click("#interpolate")
    settle(page)
    strip = page.evaluate("() => { const s = window.kerasVae.last.strip; "
                          "return {z: Array.from(s.z), images: Array.from(s.images)}; }")
    ref_z = recipes.interpolate(3, 11, 6, 3)
    z = np.asarray(strip["z"], np.float32).reshape(6, 3)
    np.testing.assert_array_equal(z[[0, -1]], ref_z[[0, -1]])  # exact endpoints
    np.testing.assert_allclose(z, ref_z, rtol=2e-7, atol=1e-7)
    ref = onnx_decode(tiny_export, z)
    np.testing.assert_allclose(np.reshape(strip["images"], ref.shape), ref, rtol=0, atol=1e-5)
    assert canvas_rgba(page, "strip").shape[:2] == (8, 6 * 9 - 1)


def test_sliders_decode_live(page, tiny_export, recipes):
    page.fill("#slider-seed", "5")
    page.click("#slider-from-seed")
    settle(page)
    z = np.asarray(page.evaluate("() => Array.from(window.kerasVae.last.slider.z)"), np.float32)
    np.testing.assert_array_equal(z, recipes.prior_z(1, 3, 5)[0])
    # Drag dimension 1 to 2.5 (an input event, as a user's drag sends).
    page.evaluate("""() => {
        const s = document.querySelector('#sliders input[data-dim="1"]');
        s.value = '2.5';
        s.dispatchEvent(new Event('input', {bubbles: true}));
    }""")
    settle(page)
    slider = page.evaluate("() => { const s = window.kerasVae.last.slider; "
                           "return {z: Array.from(s.z), images: Array.from(s.images)}; }")
    expected_z = recipes.prior_z(1, 3, 5)
    expected_z[0, 1] = 2.5
    np.testing.assert_array_equal(np.asarray(slider["z"], np.float32), expected_z[0])
    ref = onnx_decode(tiny_export, expected_z)
    np.testing.assert_allclose(np.reshape(slider["images"], ref.shape), ref, rtol=0, atol=1e-5)
    assert page.inner_text('#sliders label:nth-child(2) output') == "2.50"


def _draw_two(page):
    box = page.locator("#pad").bounding_box()
    x0, y0 = box["x"], box["y"]
    page.click("#clear")
    page.mouse.move(x0 + 60, y0 + 70)
    page.mouse.down()
    for x, y in [(90, 40), (140, 40), (165, 75), (140, 120), (70, 185), (170, 185)]:
        page.mouse.move(x0 + x, y0 + y, steps=6)
    page.mouse.up()


def test_drawn_digit_is_scored_by_the_service(page, server):
    scored(page, lambda: _draw_two(page))
    result = page.evaluate("() => { const s = window.kerasVae.last.score; "
                           "return {image: Array.from(s.image), response: s.response}; }")
    image = np.asarray(result["image"], np.float32).reshape(1, 8, 8, 1)
    # The page sends the pad averaged over 28 x 28 blocks.
    pad = canvas_rgba(page, "pad")[..., 0].astype(np.float64)
    blocks = pad.reshape(8, 28, 8, 28).mean(axis=(1, 3)) / 255
    np.testing.assert_allclose(image[0, ..., 0], blocks, atol=1e-6)
    assert 0.1 < image.mean() < 0.6  # a stroke, not an empty pad
    # The score is the scorer's at eps = 0 on that image.
    response = result["response"]
    ref = server.scorer.scores(image)
    np.testing.assert_allclose(response["scores"], ref, rtol=1e-6)
    assert response["threshold"] == THRESHOLD
    assert response["is_anomaly"] == [bool(ref[0] > THRESHOLD)]
    assert page.inner_text("#score-value") == f"{ref[0]:.2f}"
    assert page.inner_text("#score-threshold") == f"{THRESHOLD:.2f}"
    assert page.inner_text("#score-verdict") == ("anomaly" if ref[0] > THRESHOLD else "normal")


def test_uploaded_png_is_scored_at_its_pixels(page, server, tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    path = tmp_path / "digit.png"
    Image.fromarray(pixels).save(path)
    scored(page, lambda: page.set_input_files("#upload", str(path)))
    sent = np.asarray(page.evaluate("() => Array.from(window.kerasVae.last.score.image)"),
                      np.float32).reshape(1, 8, 8, 1)
    # An 8x8 PNG is enlarged by whole pixels onto the pad, so the average gives it back.
    np.testing.assert_allclose(sent[0, ..., 0], pixels / 255, atol=1e-6)
    score = page.evaluate("() => window.kerasVae.last.score.response.scores[0]")
    np.testing.assert_allclose(score, server.scorer.scores(sent)[0], rtol=1e-6)


def test_bad_seed_is_a_clear_message(page):
    page.fill("#seed", "-4")
    page.click("#sample")
    settle(page)
    assert page.inner_text("#samples-error") == 'Seed must be a non-negative integer, got "-4".'
    page.fill("#seed", "1")
    page.click("#sample")
    settle(page)
    assert page.inner_text("#samples-error") == ""


def test_missing_runtime_and_service_errors_are_shown(browser, server):
    """No onnxruntime-web under /ort/, or a 4xx from /v1/score: one clear line on the page."""
    page = browser.new_page()
    try:
        page.route("**/ort/**", lambda route: route.fulfill(status=404, body="{}"))
        page.goto(server.url)
        with pytest.raises(Exception, match="onnxruntime-web did not load"):
            page.evaluate("() => window.kerasVae.ready")
        status = page.inner_text("#status")
        assert status.startswith("Not ready: onnxruntime-web did not load from ")
        assert status.endswith("npm ci --prefix export/web")
    finally:
        page.close()
    page = open_page(browser, server)
    try:
        page.route("**/v1/score", lambda route: route.fulfill(
            status=400, content_type="application/json",
            body='{"error": "images must have shape (n, 8, 8, 1)"}'))
        page.click("#score")
        settle(page)
        assert page.inner_text("#score-error") == (
            "POST v1/score answered 400: images must have shape (n, 8, 8, 1)")
    finally:
        page.close()


def test_screenshot(page, tmp_path):
    """A picture of the whole page after sampling, sliders, interpolation and scoring."""
    from PIL import Image

    out = Path(os.environ.get("KERAS_VAE_SCREENSHOT_DIR", tmp_path)) / "browser_page_tiny.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    picture = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("L"))
    assert picture.shape[1] == 1240 and picture.shape[0] >= 800
    grid = page.locator("#grid").bounding_box()
    region = picture[int(grid["y"]):int(grid["y"] + grid["height"]),
                     int(grid["x"]):int(grid["x"] + grid["width"])]
    assert region.std() > 10  # the samples are drawn, not a blank canvas


def test_mixture_prior_draws_like_the_manifest(browser, serve_page, tiny_mixture_export,
                                               recipes):
    manifest = json.loads((tiny_mixture_export / "manifest.json").read_text())
    assert manifest["prior"]["type"] == "mixture"
    with serve_page(tiny_mixture_export) as server:
        page = open_page(browser, server)
        try:
            for seed in (0, 7):
                js = np.asarray(page.evaluate(
                    "(s) => Array.from(window.kerasVae.priorZ(200, s))", seed),
                    np.float32).reshape(200, 3)
                want = recipes.sample_prior(manifest["prior"], 200, 3, seed)
                # numpy's float32 arithmetic against JavaScript's float64 one, rounded once
                np.testing.assert_allclose(js, want, rtol=2e-7, atol=1e-6)
                assert np.abs(want - np.asarray(manifest["prior"]["means"])[:, None]).min() < 3
            page.fill("#seed", "5")
            page.select_option("#count", "16")
            page.click("#sample")
            settle(page)
            images = np.asarray(page.evaluate(
                "() => Array.from(window.kerasVae.last.grid.images)"), np.float32)
            ref = onnx_decode(tiny_mixture_export,
                              recipes.sample_prior(manifest["prior"], 16, 3, 5), None)
            np.testing.assert_allclose(images.reshape(ref.shape), ref, atol=1e-5)
        finally:
            page.close()


def test_conditional_export_has_a_class_picker(browser, serve_page, tiny_conditional_export,
                                               recipes):
    with serve_page(tiny_conditional_export) as server:
        page = open_page(browser, server)
        try:
            assert "3 classes" in page.inner_text("#status")
            options = page.eval_on_selector_all("#grid-class option", "os => os.map(o => o.text)")
            assert options == ["each in turn", "0: circle", "1: square", "2: star"]
            page.fill("#seed", "2")
            page.select_option("#count", "16")
            page.select_option("#grid-class", "-1")  # class i % 3 for sample i
            page.click("#sample")
            settle(page)
            grid = page.evaluate("() => { const g = window.kerasVae.last.grid; return {labels: "
                                 "Array.from(g.labels), images: Array.from(g.images)}; }")
            labels = np.arange(16) % 3
            np.testing.assert_array_equal(grid["labels"], labels)
            ref = onnx_decode(tiny_conditional_export, recipes.prior_z(16, 3, 2), labels)
            np.testing.assert_allclose(np.reshape(grid["images"], ref.shape), ref, atol=1e-5)
            # One class for all, and the class changes the picture.
            page.select_option("#grid-class", "2")
            settle(page)
            star = np.reshape(page.evaluate("() => Array.from(window.kerasVae.last.grid.images)"),
                              ref.shape)
            ref_star = onnx_decode(tiny_conditional_export, recipes.prior_z(16, 3, 2),
                                   np.full(16, 2))
            np.testing.assert_allclose(star, ref_star, atol=1e-5)
            assert np.abs(ref_star - ref).max() > 1e-3
            # Scoring sends the picked class to the scorer.
            page.select_option("#score-class", "1")
            scored(page, lambda: _draw_two(page))
            result = page.evaluate("() => { const s = window.kerasVae.last.score; return "
                                   "{image: Array.from(s.image), labels: Array.from(s.labels), "
                                   "scores: s.response.scores}; }")
            assert result["labels"] == [1]
            image = np.asarray(result["image"], np.float32).reshape(1, 8, 8, 1)
            np.testing.assert_allclose(result["scores"], server.scorer.scores(image, [1]),
                                       rtol=1e-6)
            assert page.inner_text("#score-threshold") == "not calibrated"
            assert page.errors == []
        finally:
            page.close()


def test_rgb_non_square_export(browser, serve_page, tiny_rgb_export, recipes, tmp_path):
    from PIL import Image

    with serve_page(tiny_rgb_export) as server:
        page = open_page(browser, server)
        try:
            page.fill("#seed", "4")
            page.select_option("#count", "16")
            page.click("#sample")
            settle(page)
            images = np.reshape(page.evaluate("() => Array.from(window.kerasVae.last.grid.images)"),
                                (16, 6, 10, 3))
            ref = onnx_decode(tiny_rgb_export, recipes.prior_z(16, 2, 4))
            np.testing.assert_allclose(images, ref, atol=1e-5)
            shown = canvas_rgba(page, "grid")[..., :3].astype(int)
            assert np.abs(shown - recipes.grid(ref)).max() <= 1  # colour channels in place
            # A 10x6 RGB PNG goes to the scorer as its own pixels.
            pixels = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "rgb.png")
            scored(page, lambda: page.set_input_files("#upload", str(tmp_path / "rgb.png")))
            sent = np.asarray(page.evaluate("() => Array.from(window.kerasVae.last.score.image)"),
                              np.float32).reshape(1, 6, 10, 3)
            np.testing.assert_allclose(sent[0], pixels / 255, atol=1e-6)
            score = page.evaluate("() => window.kerasVae.last.score.response.scores[0]")
            np.testing.assert_allclose(score, server.scorer.scores(sent)[0], rtol=1e-6)
            assert page.errors == []
        finally:
            page.close()
