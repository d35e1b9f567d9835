"""The inference service (`export/serve.py`), run as a subprocess where TensorFlow cannot load.

Every number the service returns is held to onnxruntime called directly on
the same file (fp32, within 1e-5), through a client nobody here wrote
(`tritonclient[http]`) as well as raw HTTP; bad requests must each get a
clear 4xx while good requests between them keep their correct answers.
"""

import gzip
import inspect
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

tritonclient_http = pytest.importorskip("tritonclient.http")

LATENT = 3  # the tiny exports of conftest.py
IMAGE_SHAPE = (8, 8, 1)


def ort_session(path):
    """onnxruntime called directly: the reference every served number is held to."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _z(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, LATENT), dtype=np.float32)


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, *IMAGE_SHAPE), dtype=np.float32)


def _infer_body(name, array, datatype="FP32", model_inputs=None):
    inputs = model_inputs or [{"name": name, "shape": list(array.shape), "datatype": datatype,
                               "data": array.tolist()}]
    return {"inputs": inputs}


def _decode_json(raw):
    out = json.loads(raw)
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
            for o in out["outputs"]}


def _assert_good_decode(server, export_dir, seed=123):
    """A good request after a bad one still gets onnxruntime's numbers."""
    z = _z(3, seed)
    status, _, raw = server.call("POST", "/v2/models/decoder/infer", _infer_body("z", z))
    assert status == 200, raw
    want = ort_session(export_dir / "decoder.onnx").run(None, {"z": z})[0]
    np.testing.assert_allclose(_decode_json(raw)["x"], want, rtol=0, atol=1e-5)


def _png(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _read_png(raw):
    return np.asarray(Image.open(io.BytesIO(raw)))


# ------------------------------------------------------------- no TensorFlow


def test_blocker_really_blocks(device_env):
    cases = [(m, {}) for m in ("tensorflow", "keras", "keras_vae", "keras_vae.export")]
    for module, extra in [*cases, ("orjson", {"BLOCK_MODULES": "orjson"})]:
        r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                           text=True, env={**device_env, **extra}, timeout=60)
        assert r.returncode != 0 and "test blocker" in r.stderr, module
    r = subprocess.run([sys.executable, "-c", "import numpy, onnxruntime, orjson"],
                       capture_output=True, text=True, env=device_env, timeout=60)
    assert r.returncode == 0, r.stderr  # what a device has still imports


def test_server_runs_without_tensorflow(server):
    stats = server.stats()
    assert stats["tensorflow_imported"] is False
    assert set(stats["models"]) == {"decoder", "encoder", "scorer"}


# ----------------------------------------------------------- the protocol


def test_health_and_metadata_through_tritonclient(server, calibrated):
    client = tritonclient_http.InferenceServerClient(server.url)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "keras-vae" and "binary_tensor_data" in meta["extensions"]
    manifest = json.loads((calibrated / "manifest.json").read_text())
    for graph, spec in manifest["graphs"].items():
        assert client.is_model_ready(graph)
        assert client.is_model_ready(graph, model_version="1")
        got = client.get_model_metadata(graph)
        assert got["name"] == graph and got["versions"] == ["1"]
        for side in ("inputs", "outputs"):
            assert [t["name"] for t in got[side]] == [t["name"] for t in spec[side]]
            assert [t["datatype"] for t in got[side]] == ["FP32"] * len(spec[side])
            assert [t["shape"] for t in got[side]] == [
                [-1 if d is None else d for d in t["shape"]] for t in spec[side]]
    with pytest.raises(Exception, match="unknown model"):
        client.get_model_metadata("generator")
    assert not client.is_model_ready("decoder", model_version="7")
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_gets_onnxruntime_numbers(server, calibrated, binary):
    client = tritonclient_http.InferenceServerClient(server.url)
    feeds = {
        "decoder": {"z": _z(5)},
        "encoder": {"image": _images(5)},
        "scorer": {"image": _images(5, 1), "eps": _z(5, 2)},
    }
    for graph, inputs in feeds.items():
        want = ort_session(calibrated / f"{graph}.onnx").run(None, inputs)
        names = [o.name for o in ort_session(calibrated / f"{graph}.onnx").get_outputs()]
        request = []
        for name, array in inputs.items():
            tensor = tritonclient_http.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=binary)
            request.append(tensor)
        outputs = [tritonclient_http.InferRequestedOutput(n, binary_data=binary) for n in names]
        result = client.infer(graph, request, outputs=outputs, request_id="r1")
        for name, expected in zip(names, want):
            got = result.as_numpy(name)
            assert got.dtype == np.float32 and got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(
                1.0, float(np.abs(expected).max())), err_msg=f"{graph}/{name}")
        assert result.get_response()["id"] == "r1"
    # No outputs named: tritonclient asks for all of them in binary.
    result = client.infer("encoder", [_triton_input("image", _images(2))])
    want = ort_session(calibrated / "encoder.onnx").run(["z_log_var"], {"image": _images(2)})
    np.testing.assert_allclose(result.as_numpy("z_log_var"), want[0], atol=1e-5)
    client.close()


def _triton_input(name, array, datatype="FP32"):
    tensor = tritonclient_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_outputs_parameter_filters_and_compressed_requests(server, calibrated):
    client = tritonclient_http.InferenceServerClient(server.url)
    x = _images(3)
    want = ort_session(calibrated / "encoder.onnx").run(["z_log_var"], {"image": x})
    for algorithm in (None, "gzip", "deflate"):
        result = client.infer("encoder", [_triton_input("image", x)],
                              outputs=[tritonclient_http.InferRequestedOutput("z_log_var")],
                              request_compression_algorithm=algorithm)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["z_log_var"]
        assert result.as_numpy("z_mean") is None
        np.testing.assert_allclose(result.as_numpy("z_log_var"), want[0], atol=1e-5)
    client.close()


def test_conditional_model_takes_int32_labels(start_server, conditional, recipes):
    _, export_dir = conditional
    server = start_server(export_dir)
    client = tritonclient_http.InferenceServerClient(server.url)
    meta = client.get_model_metadata("decoder")
    assert meta["inputs"][1] == {"name": "label", "datatype": "INT32", "shape": [-1]}
    z, labels = _z(4), np.array([0, 1, 2, 3], np.int32)
    result = client.infer("decoder", [_triton_input("z", z),
                                      _triton_input("label", labels, "INT32")])
    want = ort_session(export_dir / "decoder.onnx").run(None, {"z": z, "label": labels})[0]
    np.testing.assert_allclose(result.as_numpy("x"), want, atol=1e-5)
    # JSON labels out of range or as floats are refused.
    for bad, match in (([0, 1, 2, 9], r"\[0, 4\)"), ([0.5, 1, 2, 3], "integers")):
        body = {"inputs": [{"name": "z", "shape": [4, LATENT], "datatype": "FP32",
                            "data": z.tolist()},
                           {"name": "label", "shape": [4], "datatype": "INT32", "data": bad}]}
        status, out = server.json("POST", "/v2/models/decoder/infer", body)
        assert status == 400 and re.search(match, out["error"]), out
    # Picture routes need a class for a conditional model; with one they match onnxruntime.
    status, out = server.json("GET", "/v1/sample.png?n=4&seed=5")
    assert status == 400 and "class" in out["error"]
    status, _, raw = server.call("GET", "/v1/sample.png?n=4&seed=5&class_id=2")
    assert status == 200
    want = ort_session(export_dir / "decoder.onnx").run(
        None, {"z": _z(4, 5), "label": np.full(4, 2, np.int32)})[0]
    np.testing.assert_array_equal(_read_png(raw), recipes.grid(want))
    # Scoring takes labels in JSON.
    x = _images(2)
    status, out = server.json("POST", "/v1/score", {"images": x.tolist(), "labels": [1, 3]})
    assert status == 200, out
    want = ort_session(export_dir / "scorer.onnx").run(None, {
        "image": x, "eps": np.zeros((2, LATENT), np.float32),
        "label": np.array([1, 3], np.int32)})[0]
    np.testing.assert_allclose(out["scores"], want, rtol=1e-5)
    assert out["threshold"] is None and out["is_anomaly"] is None
    client.close()


def test_class_ids_everywhere_and_old_names_once_with_a_deprecation_line(start_server,
                                                                        conditional):
    _, export_dir = conditional
    server = start_server(export_dir)
    decoder = ort_session(export_dir / "decoder.onnx")
    want = decoder.run(None, {"z": _z(3, 5), "label": np.array([2, 0, 2], np.int32)})[0]
    status, _, new = server.call("GET", "/v1/sample.png?n=3&seed=5&class_ids=2,0")
    assert status == 200 and "deprecated" not in server.output()
    status, _, old = server.call("GET", "/v1/sample.png?n=3&seed=5&class_id=2,0")
    assert status == 200 and old == new  # ids cycle over the images: 2, 0, 2
    status, _, again = server.call("GET", "/v1/sample.png?n=3&seed=5&class_id=2,0")
    assert again == new
    lines = [line for line in server.output().splitlines() if "deprecated" in line]
    assert len(lines) == 1 and "'class_id'" in lines[0] and "class_ids" in lines[0], lines
    from keras_vae import recipes

    np.testing.assert_array_equal(_read_png(new), recipes.grid(want))
    # Scoring: JSON key, query parameter (raw PNG) and form field are all `class_ids`.
    x = _images(2)
    scorer = ort_session(export_dir / "scorer.onnx")
    eps = np.zeros((2, LATENT), np.float32)
    expected = scorer.run(None, {"image": x, "eps": eps, "label": np.array([1, 3], np.int32)})[0]
    status, out = server.json("POST", "/v1/score", {"images": x.tolist(), "class_ids": [1, 3]})
    assert status == 200, out
    np.testing.assert_allclose(out["scores"], expected, rtol=1e-5)
    pixels = np.round(x[0, ..., 0] * 255).astype(np.uint8)
    grey = (pixels / 255.0).astype(np.float32)[None, ..., None]
    one = scorer.run(None, {"image": grey, "eps": eps[:1], "label": np.array([3], np.int32)})[0]
    status, _, raw = server.call("POST", "/v1/score?class_ids=3", _png(pixels),
                                 {"Content-Type": "image/png"})
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw)["scores"], one, rtol=1e-5)
    body, ctype = _multipart([("image", "a.png", _png(pixels))], fields={"class_ids": "3"})
    status, _, raw = server.call("POST", "/v1/score", body, {"Content-Type": ctype})
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw)["scores"], one, rtol=1e-5)
    status, out = server.json("POST", "/v1/score", {"images": x.tolist(), "class_ids": [1, 9]})
    assert status == 400 and "[0, 4)" in out["error"], out


# ------------------------------------------------------------ bad requests


def _bad_requests(server):
    z = _z(2).tolist()
    good = {"name": "z", "shape": [2, LATENT], "datatype": "FP32", "data": z}
    infer = "/v2/models/decoder/infer"
    nan_body = json.dumps({"inputs": [{**good, "data": [[float("nan"), 0, 0], [0, 0, 0]]}]})
    nan_image = _images(1).tolist()
    nan_image[0][3][4][0] = float("inf")
    return [
        ("malformed JSON", "POST", infer, b'{"inputs": [', {}, 400, "malformed JSON"),
        ("not UTF-8", "POST", infer, b"\xff\xfe{}", {}, 400, "UTF-8"),
        ("no inputs", "POST", infer, {"outputs": []}, {}, 400, "'inputs'"),
        ("unknown model", "POST", "/v2/models/generator/infer", {"inputs": [good]}, {}, 404,
         "unknown model 'generator'"),
        ("unknown version", "POST", "/v2/models/decoder/versions/3/infer", {"inputs": [good]},
         {}, 404, "no version '3'"),
        ("unknown input", "POST", infer, {"inputs": [{**good, "name": "w"}]}, {}, 400,
         "no input 'w'"),
        ("missing input", "POST", "/v2/models/scorer/infer",
         {"inputs": [{"name": "eps", "shape": [2, LATENT], "datatype": "FP32", "data": z}]},
         {}, 400, "needs the inputs ['image']"),
        ("wrong shape", "POST", infer, {"inputs": [{**good, "shape": [3, 2]}]}, {}, 400,
         "shape [3, 2]"),
        ("count mismatch", "POST", infer, {"inputs": [{**good, "shape": [3, LATENT]}]}, {},
         400, "has 6 values"),
        ("wrong datatype", "POST", infer, {"inputs": [{**good, "datatype": "FP64"}]}, {}, 400,
         "datatype 'FP64'"),
        ("ragged data", "POST", infer, {"inputs": [{**good, "data": [[0, 0, 0], [0]]}]}, {},
         400, "ragged"),
        ("string data", "POST", infer, {"inputs": [{**good, "data": [["a", "b", "c"]] * 2}]},
         {}, 400, "numbers"),
        ("NaN", "POST", infer, nan_body.encode(), {}, 400, "NaN"),
        ("unknown output", "POST", infer, {"inputs": [good], "outputs": [{"name": "y"}]}, {},
         400, "no output 'y'"),
        ("pixels out of range", "POST", "/v2/models/encoder/infer",
         {"inputs": [{"name": "image", "shape": [1, *IMAGE_SHAPE], "datatype": "FP32",
                      "data": (_images(1) * 255).tolist()}]}, {}, 400, "divide by 255"),
        ("binary size mismatch", "POST", infer,
         json.dumps({"inputs": [{**{k: v for k, v in good.items() if k != "data"},
                                 "parameters": {"binary_data_size": 8}}]}).encode() + b"\0" * 8,
         {"Inference-Header-Content-Length": "0"}, 400, "Inference-Header-Content-Length"),
        ("binary size wrong", "POST", infer, _binary_request(good, 8), _binary_headers(good),
         400, "binary_data_size 8"),
        ("too many examples", "POST", infer,
         {"inputs": [{**good, "shape": [40, LATENT], "data": _z(40).tolist()}]}, {}, 413,
         "limit of 32 (--max-examples)"),
        ("oversized body", "POST", infer, b"x" * 300_000, {}, 413, "--max-body-bytes"),
        ("gzip bomb", "POST", infer, gzip.compress(b" " * 2_000_000),
         {"Content-Encoding": "gzip"}, 413, "decompressed body"),
        ("bad encoding", "POST", infer, b"{}", {"Content-Encoding": "br"}, 415, "'br'"),
        ("corrupt gzip", "POST", infer, b"not gzip", {"Content-Encoding": "gzip"}, 400,
         "corrupt"),
        ("GET on infer", "GET", infer, None, {}, 405, "method GET not allowed"),
        ("no such route", "GET", "/v3/models", None, {}, 404, "not found: /v3/models"),
        ("score: wrong shape", "POST", "/v1/score", {"images": [[0.5] * 7] * 7}, {}, 400,
         "shape [7, 7]"),
        ("score: NaN", "POST", "/v1/score", json.dumps({"images": nan_image}).encode(), {},
         400, "1 NaN/Inf values"),
        ("score: range", "POST", "/v1/score", {"images": (_images(1) + 1).tolist()}, {}, 400,
         "outside the model's range [0.0, 1.0]"),
        ("score: no images", "POST", "/v1/score", {"pictures": []}, {}, 400, '"images"'),
        ("score: labels on unconditional", "POST", "/v1/score",
         {"images": _images(1).tolist(), "labels": [1]}, {}, 400, "unconditional"),
        ("score: jpeg", "POST", "/v1/score", b"\xff\xd8\xff", {"Content-Type": "image/jpeg"},
         415, "send PNG"),
        ("score: too many", "POST", "/v1/score", {"images": _images(33).tolist()}, {}, 413,
         "--max-examples"),
        ("sample: n too large", "GET", "/v1/sample.png?n=33", None, {}, 413,
         "n=33 is above the limit of 32 (--max-examples)"),
        ("sample: n not int", "GET", "/v1/sample.png?n=four", None, {}, 400, "not an integer"),
        ("sample: negative seed", "GET", "/v1/sample.png?seed=-1", None, {}, 400, ">= 0"),
        ("sample: class on unconditional", "GET", "/v1/sample.png?class_id=1", None, {}, 400,
         "unconditional"),
        ("interpolate: one step", "GET", "/v1/interpolate.png?steps=1", None, {}, 400,
         "steps must be >= 2"),
        ("interpolate: too many", "GET", "/v1/interpolate.png?steps=1000", None, {}, 413,
         "--max-examples"),
    ]


def _binary_request(tensor, size):
    head = json.dumps({"inputs": [{**{k: v for k, v in tensor.items() if k != "data"},
                                   "parameters": {"binary_data_size": size}}]}).encode()
    return head + b"\0" * size


def _binary_headers(tensor):
    head = json.dumps({"inputs": [{**{k: v for k, v in tensor.items() if k != "data"},
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    return {"Inference-Header-Content-Length": str(len(head))}


def test_bad_requests_get_clear_4xx_and_good_ones_still_work(server, calibrated):
    for what, method, path, body, headers, status, message in _bad_requests(server):
        got, answer_headers, raw = server.call(method, path, body, headers)
        assert got == status, (what, got, raw)
        error = json.loads(raw)["error"]
        assert message in error, (what, error)
        assert "\n" not in error and "Traceback" not in error, (what, error)
        _assert_good_decode(server, calibrated)
    assert server.proc.poll() is None
    refused = server.stats()["refused"]
    assert refused.get("400", 0) >= 20 and refused.get("413", 0) >= 5


def test_slow_and_vanishing_clients(server, calibrated):
    port = server.port
    request = b"POST /v2/models/decoder/infer HTTP/1.1\r\nHost: x\r\nContent-Type: " \
              b"application/json\r\nContent-Length: 1000\r\n\r\n"
    # A client that stops half-way through its body: 408 after --body-timeout-s (1 s) ...
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(request + b'{"inputs": [')
    # ... while everybody else is served at once (the reference session made beforehand).
    ort_session(calibrated / "decoder.onnx")
    start = time.perf_counter()
    _assert_good_decode(server, calibrated)
    assert time.perf_counter() - start < 0.9
    slow.settimeout(10)
    answer = _recv_all(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s" in answer
    # Clients that vanish: mid-headers, mid-body, and before reading the answer.
    for payload in (b"POST /v2/models/decoder/infer HTTP/1.1\r\nHost:",
                    request + b'{"inputs": [{"name": "z"',
                    _raw_request("/v2/models/decoder/infer", json.dumps(
                        _infer_body("z", _z(2))).encode())):
        gone = socket.create_connection(("127.0.0.1", port))
        gone.sendall(payload)
        gone.close()
    # Not HTTP at all.
    junk = socket.create_connection(("127.0.0.1", port))
    junk.sendall(b"\x16\x03\x01 hello\r\n\r\n")
    junk.settimeout(10)
    assert _recv_all(junk).startswith(b"HTTP/1.1 400")
    time.sleep(0.3)
    _assert_good_decode(server, calibrated)
    assert server.proc.poll() is None


def _raw_request(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _recv_all(sock):
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


# ---------------------------------------------------------------- scoring


def _scores(export_dir, x):
    eps = np.zeros((len(x), LATENT), np.float32)
    return ort_session(export_dir / "scorer.onnx").run(None, {"image": x, "eps": eps})[0]


def test_score_json_png_and_multipart(server, calibrated):
    manifest = json.loads((calibrated / "manifest.json").read_text())
    threshold = manifest["anomaly"]["threshold"]
    x = _images(6, 3)
    want = _scores(calibrated, x)
    assert (want > threshold).any() and (want <= threshold).any()

    status, out = server.json("POST", "/v1/score", {"images": x.tolist()})
    assert status == 200, out
    np.testing.assert_allclose(out["scores"], want, rtol=1e-5)
    assert out["threshold"] == threshold and out["quantile"] == 0.5
    assert out["is_anomaly"] == [bool(s > threshold) for s in out["scores"]]
    assert out["score"] == "negative_elbo"
    # One image without batch or channel axes.
    status, out = server.json("POST", "/v1/score", {"images": x[0, ..., 0].tolist()})
    assert status == 200 and np.isclose(out["scores"][0], want[0], rtol=1e-5)

    # 8-bit PNG, as the raw body: pixels / 255.
    pixels = np.round(x[0, ..., 0] * 255).astype(np.uint8)
    status, _, raw = server.call("POST", "/v1/score", _png(pixels),
                                 {"Content-Type": "image/png"})
    assert status == 200, raw
    expected = _scores(calibrated, (pixels / 255.0).astype(np.float32)[None, ..., None])
    np.testing.assert_allclose(json.loads(raw)["scores"], expected, rtol=1e-5)
    # 16-bit PNG: pixels / 65535.
    deep = (x[1, ..., 0] * 65535).astype(np.uint16)
    status, _, raw = server.call("POST", "/v1/score", _png(deep),
                                 {"Content-Type": "image/png"})
    assert status == 200, raw
    expected = _scores(calibrated, (deep / 65535.0).astype(np.float32)[None, ..., None])
    np.testing.assert_allclose(json.loads(raw)["scores"], expected, rtol=1e-5)

    # Multipart upload of two PNGs, as a browser form sends them.
    second = np.round(x[2, ..., 0] * 255).astype(np.uint8)
    body, ctype = _multipart([("image", "a.png", _png(pixels)), ("image", "b.png", _png(second))])
    status, _, raw = server.call("POST", "/v1/score", body, {"Content-Type": ctype})
    assert status == 200, raw
    stacked = np.stack([pixels, second]).astype(np.float32)[..., None] / 255.0
    np.testing.assert_allclose(json.loads(raw)["scores"], _scores(calibrated, stacked),
                               rtol=1e-5)


def test_score_refuses_pngs_that_do_not_fit(server, calibrated):
    grey = np.zeros((8, 8), np.uint8)
    cases = [
        (_png(np.zeros((8, 8, 3), np.uint8)), "RGB but the model takes greyscale"),
        (_png(np.zeros((8, 8, 4), np.uint8)), "alpha"),
        (_png(np.zeros((8, 8, 2), np.uint8)), "alpha"),
        (_png(np.zeros((10, 8), np.uint8)), "8x10 pixels but the model takes 8x8"),
        (_png(grey)[:-20], "truncated"),
        (_png(grey)[:40] + b"\0" + _png(grey)[41:], "corrupt"),
        (_palette_png(), "palette"),
    ]
    for data, message in cases:
        status, _, raw = server.call("POST", "/v1/score", data, {"Content-Type": "image/png"})
        assert status == 400, (message, raw)
        assert message in json.loads(raw)["error"], (message, raw)
    body, ctype = _multipart([("image", "x.png", _png(np.zeros((8, 8, 3), np.uint8)))])
    status, _, raw = server.call("POST", "/v1/score", body, {"Content-Type": ctype})
    assert status == 400 and "x.png: the PNG is RGB" in json.loads(raw)["error"]
    body, ctype = _multipart([], fields={"note": "no file"})
    status, _, raw = server.call("POST", "/v1/score", body, {"Content-Type": ctype})
    assert status == 400 and "no file" in json.loads(raw)["error"]
    _assert_good_decode(server, calibrated)


def test_score_refuses_hostile_pngs_with_one_line_json(server, calibrated):
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(
            ">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    def png(header, rows=(b"\0" + b"\x80" * 8) * 8):
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

    good = _png(np.full((8, 8), 128, np.uint8))
    hostile = {
        "bit depth 3": png(struct.pack(">IIBBBBB", 8, 8, 3, 0, 0, 0, 0)),
        "0-byte IHDR": png(b""),
        "6-byte IHDR": png(b"\0" * 6),
        "no IEND": good[:-12],
        "cut in the image data": good[:-20],
        "image data too short": png(struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0), b"\0" * 20),
        "a bomb's header": png(struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)),
    }
    for what, data in hostile.items():
        body, ctype = _multipart([("image", "h.png", data)])
        for payload, headers in ((data, {"Content-Type": "image/png"}),
                                 (body, {"Content-Type": ctype})):
            status, headers, raw = server.call("POST", "/v1/score", payload, headers)
            assert status == 400 and headers["content-type"] == "application/json", (what, raw)
            error = json.loads(raw)["error"]
            assert "\n" not in error and "Traceback" not in error, (what, error)
            assert "PNG" in error and "scores" not in json.loads(raw), (what, error)
    assert server.proc.poll() is None
    _assert_good_decode(server, calibrated)


def _palette_png():
    image = Image.fromarray(np.zeros((8, 8), np.uint8), "L").convert("P")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _multipart(files, fields=None):
    boundary = "----keras-vae-test-boundary"
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
                     + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_score_without_threshold(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir)
    x = _images(3)
    status, out = server.json("POST", "/v1/score", {"images": x.tolist()})
    assert status == 200
    assert out["threshold"] is None and out["is_anomaly"] is None
    np.testing.assert_allclose(out["scores"], _scores(export_dir, x), rtol=1e-5)


# --------------------------------------------------------------- pictures


def test_sample_png_pixels_equal_direct_decoding(server, tiny, calibrated, recipes):
    model, _ = tiny
    _grid = recipes.grid
    decoder = ort_session(calibrated / "decoder.onnx")
    status, headers, raw = server.call("GET", "/v1/sample.png?n=7&seed=3")
    assert status == 200 and headers["content-type"] == "image/png"
    images = decoder.run(None, {"z": _z(7, 3)})[0]  # the prior draws of seed 3
    np.testing.assert_array_equal(_read_png(raw), _grid(images))
    # The same pixels as the library's VAE.sample(n, seed) (rounding aside).
    keras_images = np.asarray(model.sample(7, seed=3))
    assert np.abs(_read_png(raw).astype(int) - _grid(keras_images).astype(int)).max() <= 1
    # Interpolation: one row of `steps` images between the first draws of two seeds.
    status, _, raw = server.call("GET", "/v1/interpolate.png?seed_a=4&seed_b=9&steps=5")
    assert status == 200
    z = recipes.interpolate(4, 9, 5, LATENT)
    np.testing.assert_array_equal(z[0], _z(1, 4)[0])
    np.testing.assert_array_equal(_read_png(raw), _grid(decoder.run(None, {"z": z})[0], 5))
    status, _, raw = server.call("GET", "/v1/sample.png?n=4&seed=3&scale=3")
    assert status == 200 and _read_png(raw).shape == (17 * 3, 17 * 3)


def test_pictures_draw_from_the_exported_prior(start_server, export_pkg, tmp_path, recipes):
    import keras_vae

    model = keras_vae.VAE(image_shape=IMAGE_SHAPE, latent_dim=LATENT, arch="mlp", seed=0,
                          arch_options={"hidden_units": [16]}, prior="mixture",
                          prior_options={"components": 3})
    out = tmp_path / "mixture"
    export_pkg.export(model, out, formats="onnx", graphs=("decoder",))
    table = json.loads((out / "manifest.json").read_text())["prior"]
    assert table["type"] == "mixture"
    server = start_server(out)
    decoder = ort_session(out / "decoder.onnx")
    z = recipes.sample_prior(table, 6, LATENT, 5)
    assert not np.allclose(z, _z(6, 5))  # not the N(0, I) draws of the same seed
    status, _, raw = server.call("GET", "/v1/sample.png?n=6&seed=5")
    assert status == 200
    np.testing.assert_array_equal(_read_png(raw), recipes.grid(decoder.run(None, {"z": z})[0]))
    keras_images = np.asarray(model.sample(6, seed=5))  # the library's own draws
    assert np.abs(_read_png(raw).astype(int) - recipes.grid(keras_images).astype(int)).max() <= 1
    status, _, raw = server.call("GET", "/v1/interpolate.png?seed_a=1&seed_b=2&steps=4")
    path = recipes.interpolate(1, 2, 4, LATENT, table)
    assert status == 200
    np.testing.assert_array_equal(_read_png(raw),
                                  recipes.grid(decoder.run(None, {"z": path})[0], 4))
    status, _, raw = server.call("GET", f"/v1/sample.png?seed={2**32}")
    assert status == 400 and "seed" in json.loads(raw)["error"]  # the samplers' seed range


def test_a_vq_vae_export_is_refused_in_one_line(export_pkg, device, device_env, tmp_path):
    from keras_vae import VQVAE

    out = tmp_path / "vq"
    export_pkg.export(VQVAE(image_shape=IMAGE_SHAPE, codebook_size=8, code_dim=4, seed=0), out,
                      formats="onnx", graphs="decoder")
    r = subprocess.run([sys.executable, str(device / "serve.py"), str(out)],
                       capture_output=True, text=True, env=device_env, timeout=60)
    assert r.returncode == 2 and "is a VQ-VAE export" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------- coalescing, queue, drain


def _concurrent(server, bodies, path="/v2/models/decoder/infer"):
    results = [None] * len(bodies)

    def worker(i):
        results[i] = server.call("POST", path, bodies[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    return threads, results


def _assert_decodes(export_dir, zs, threads, results):
    """Once `threads` end, each answer is onnxruntime's decoding of its own codes."""
    for t in threads:
        t.join()
    decoder = ort_session(export_dir / "decoder.onnx")
    for z, (status, _, raw) in zip(zs, results):
        assert status == 200, raw
        np.testing.assert_allclose(_decode_json(raw)["x"], decoder.run(None, {"z": z})[0],
                                   atol=1e-5)


def _wait_queued(server, model, count, timeout=10):
    deadline = time.monotonic() + timeout
    while server.stats()["models"][model]["queued"] < count:
        assert time.monotonic() < deadline, server.stats()
        time.sleep(0.02)


def test_coalescing_batches_requests_and_keeps_rows_apart(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir, "--batch-window-ms", 5000, "--max-batch", 64,
                          "--max-queue", 6)
    zs = [_z(i + 1, seed=i) for i in range(6)]  # requests of 1..6 codes
    threads, results = _concurrent(server, [_infer_body("z", z) for z in zs])
    _wait_queued(server, "decoder", 6)
    # The queue is full: the next request is turned away with Retry-After.
    status, headers, raw = server.call("POST", "/v2/models/decoder/infer",
                                       _infer_body("z", _z(1)))
    assert status == 503 and headers["Retry-After"] == "1", raw
    assert "--max-queue 6" in json.loads(raw)["error"]
    _assert_decodes(export_dir, zs, threads, results)
    stats = server.stats()["models"]["decoder"]
    assert stats["requests"] == 6 and stats["examples"] == 21
    assert stats["runs"] == 1 and stats["largest_run_requests"] == 6, stats
    assert stats["refused_busy"] == 1


def test_without_coalescing_each_request_is_one_call(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir, "--max-batch", 1)
    threads, results = _concurrent(server, [_infer_body("z", _z(2, i)) for i in range(8)])
    for t in threads:
        t.join()
    assert all(r[0] == 200 for r in results)
    stats = server.stats()["models"]["decoder"]
    assert stats["requests"] == 8 and stats["runs"] == 8 and stats["largest_run_requests"] == 1


def test_parallel_runs_keep_rows_apart(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir, "--parallel-runs", 2, "--max-batch", 4)
    zs = [_z(3, seed=i) for i in range(12)]
    threads, results = _concurrent(server, [_infer_body("z", z) for z in zs])
    _assert_decodes(export_dir, zs, threads, results)
    stats = server.stats()["models"]["decoder"]
    assert stats["requests"] == 12 and stats["largest_run_examples"] <= 4


def test_standard_library_json_when_orjson_is_absent(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir, env={"BLOCK_MODULES": "orjson"})
    assert server.stats()["json_library"] == "json"
    z = _z(4)
    status, _, raw = server.call("POST", "/v2/models/decoder/infer", _infer_body("z", z))
    assert status == 200
    want = ort_session(export_dir / "decoder.onnx").run(None, {"z": z})[0]
    np.testing.assert_array_equal(_decode_json(raw)["x"], want)  # float32 round-trips exactly
    body = json.dumps({"inputs": [{"name": "z", "shape": [1, LATENT], "datatype": "FP32",
                                   "data": [float("nan"), 0, 0]}]}).encode()
    status, _, raw = server.call("POST", "/v2/models/decoder/infer", body)
    assert status == 400 and "1 NaN/Inf values" in json.loads(raw)["error"]
    status, out = server.json("POST", "/v1/score", {"images": _images(2).tolist()})
    np.testing.assert_allclose(out["scores"], _scores(export_dir, _images(2)), rtol=1e-5)


def test_json_numbers_round_trip_exactly(server, calibrated):
    assert server.stats()["json_library"] in ("orjson", "json")
    x = _images(3)
    status, _, raw = server.call("POST", "/v2/models/encoder/infer", _infer_body("image", x))
    want = ort_session(calibrated / "encoder.onnx").run(["z_mean"], {"image": x})[0]
    np.testing.assert_array_equal(_decode_json(raw)["z_mean"], want)


# ------------------------------------------------------------------ workers


def _worker_stats(server, count):
    """`/v1/stats` of `count` consecutive connections (each a new one)."""
    return [server.stats() for _ in range(count)]


def _alive(pid):
    """True while a thread of `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except FileNotFoundError:
            continue
    return False


def _wait(condition, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met after {timeout} s"
        time.sleep(0.05)


def test_workers_take_connections_in_turn_and_answer_alike(start_server, tiny, serve_lib):
    _, export_dir = tiny
    server = start_server(export_dir, "--workers", 2)
    stats = _worker_stats(server, 6)
    pids = [s["worker"]["pid"] for s in stats]
    assert len(set(pids)) == 2 and server.proc.pid not in pids
    assert pids[0::2] == [pids[0]] * 3 and pids[1::2] == [pids[1]] * 3, pids  # round robin
    assert {s["worker"]["index"] for s in stats} == {0, 1}
    for s in stats[:2]:
        assert s["worker"]["workers"] == 2 and s["limits"]["threads"] == 1
        assert not s["tensorflow_imported"]
        gen0 = inspect.signature(serve_lib.settle_heap).parameters["gen0_threshold"].default
        assert s["gc"]["frozen_objects"] > 1000 and s["gc"]["thresholds"][0] == gen0
    for pid in pids[:2]:  # the workers are the supervisor's children
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == server.proc.pid
    for seed in range(4):  # both workers: onnxruntime's numbers
        _assert_good_decode(server, export_dir, seed=seed)
    assert [s["models"]["decoder"]["requests"] for s in _worker_stats(server, 2)] == [2, 2]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_requests_in_flight(start_server, tiny, workers):
    _, export_dir = tiny
    server = start_server(export_dir, "--workers", workers, "--batch-window-ms", 5000)
    pids = {s["worker"]["pid"] for s in _worker_stats(server, workers)}
    zs = [_z(2, seed=i) for i in range(4)]
    threads, results = _concurrent(server, [_infer_body("z", z) for z in zs])
    _wait(lambda: sum(s["models"]["decoder"]["queued"]
                      for s in _worker_stats(server, workers)) == 4, what="4 requests queued")
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    _wait(lambda: not _connects(server), timeout=5, what="no new connections once draining")
    _assert_decodes(export_dir, zs, threads, results)
    assert server.proc.wait(20) == 0, server.output()
    assert time.monotonic() - start < 15
    assert not any(_alive(pid) for pid in pids)


def _connects(server):
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_dead_worker_is_replaced(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir, "--workers", 2)
    before = {s["worker"]["index"]: s["worker"]["pid"] for s in _worker_stats(server, 2)}
    os.kill(before[1], signal.SIGKILL)
    # Once the supervisor has reaped it (every thread gone), no connection goes to it.
    _wait(lambda: f"worker 1 (pid {before[1]}) exited with status -9" in server.output(),
          what="the supervisor seeing worker 1 die")
    for seed in range(4):  # worker 0 and the new worker 1 (once it has started)
        _assert_good_decode(server, export_dir, seed=seed)

    def replaced():
        now = {s["worker"]["index"]: s["worker"]["pid"] for s in _worker_stats(server, 2)}
        return len(now) == 2 and now[0] == before[0] and now[1] != before[1]

    _wait(replaced, what="a new worker 1")
    assert "starting another" in server.output()
    for seed in range(4):
        _assert_good_decode(server, export_dir, seed=seed)


def test_workers_stop_when_the_supervisor_is_killed(start_server, tiny):
    _, export_dir = tiny
    server = start_server(export_dir, "--workers", 2)
    pids = {s["worker"]["pid"] for s in _worker_stats(server, 2)}
    server.proc.kill()
    server.proc.wait(10)
    _wait(lambda: not any(_alive(pid) for pid in pids), timeout=30, what="the workers gone")


# ------------------------------------------------------------ static routes


def test_manifest_and_exported_files(server, calibrated):
    status, manifest = server.json("GET", "/manifest.json")
    assert status == 200 and manifest == json.loads((calibrated / "manifest.json").read_text())
    status, headers, raw = server.call("GET", "/files/decoder.onnx")
    assert status == 200 and raw == (calibrated / "decoder.onnx").read_bytes()
    for path in ("/files/manifest.json", "/files/../manifest.json", "/files/nothing.onnx",
                 "/files/%2e%2e/manifest.json"):
        status, _, raw = server.call("GET", path)
        assert status == 404, (path, raw)
        assert "error" in json.loads(raw)
    status, info = server.json("GET", "/v1/info")
    assert info["latent_dim"] == LATENT and info["image_shape"] == list(IMAGE_SHAPE)
    assert info["num_classes"] == 0 and info["value_range"] == [0.0, 1.0]


def test_page_and_onnxruntime_web_lookup(device, tiny, tmp_path, start_server):
    _, export_dir = tiny
    status, out = start_server(export_dir).json("GET", "/")
    assert status == 404 and "the page is not installed" in out["error"]
    # A page folder beside serve.py, with onnxruntime-web as npm installs it.
    web = tmp_path / "web"
    (web / "node_modules/onnxruntime-web/dist").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>vae</title>")
    (web / "app.js").write_text("export const x = 1;")
    (web / "node_modules/onnxruntime-web/dist/ort.min.js").write_text("// npm copy")
    (web / "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("not served")
    bundle = tmp_path / "bundle"
    shutil.copytree(export_dir, bundle)
    (bundle / "web/ort").mkdir(parents=True)
    (bundle / "web/ort/ort.min.js").write_text("// bundled copy")
    server = start_server(bundle, "--web-dir", web)
    status, headers, raw = server.call("GET", "/")
    assert status == 200 and b"<title>vae</title>" in raw
    assert headers["content-type"].startswith("text/html")
    status, headers, raw = server.call("GET", "/web/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    # The export's own copy comes first, then the npm copy.
    assert server.call("GET", "/ort/ort.min.js")[2] == b"// bundled copy"
    status, headers, raw = server.call("GET", "/ort/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["content-type"] == "application/wasm" and raw == b"\0asm"
    for path in ("/web/../secret.txt", "/web/%2e%2e/secret.txt", "/ort/nothing.js",
                 "/ort/../../secret.txt"):
        status, _, raw = server.call("GET", path)
        assert status == 404 and b"not served" not in raw, path


# ------------------------------------------------------------- start-up


def test_the_export_folder_serves_itself(tiny, tmp_path, device_env, serve_process, export_pkg):
    """`python serve.py .` inside a copied export: the bundle carries every server module."""
    _, export_dir = tiny
    bundle = tmp_path / "bundle"
    shutil.copytree(export_dir, bundle)
    for name in export_pkg.DEVICE_FILES:
        assert (bundle / name).is_file(), name
    env = {**device_env, "HOME": str(tmp_path)}
    server = serve_process(bundle / "serve.py", ".", (), env, log_dir=bundle)
    try:
        assert server.stats()["tensorflow_imported"] is False
        x = _images(2)
        status, out = server.json("POST", "/v1/score", {"images": x.tolist()})
        assert status == 200, out
        np.testing.assert_allclose(out["scores"], _scores(export_dir, x), rtol=1e-5)
        status, _, raw = server.call("GET", "/")
        assert status == 200 and b"<html" in raw.lower()  # the bundle's page
    finally:
        assert server.stop() == 0, server.output()


def test_start_up_refuses_changed_files_and_bad_flags(device, device_env, tiny, tmp_path):
    _, export_dir = tiny
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    data = bytearray((broken / "encoder.onnx").read_bytes())
    data[-1] ^= 1
    (broken / "encoder.onnx").write_bytes(bytes(data))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    cases = [([str(broken)], "does not match its SHA-256"),
             ([str(export_dir), "--port", str(taken.getsockname()[1])],
              "cannot listen on 127.0.0.1"),
             ([str(tmp_path / "nowhere")], "No export directory"),
             ([str(export_dir), "--max-batch", "0"], "--max-batch must be >= 1"),
             ([str(export_dir), "--batch-window-ms", "-1"], "--batch-window-ms must be >= 0"),
             ([str(export_dir), "--workers", "0"], "--workers must be in [1, 64]")]
    for args, message in cases:
        r = subprocess.run([sys.executable, str(device / "serve.py"), *args],
                           capture_output=True, text=True, env=device_env, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    taken.close()
