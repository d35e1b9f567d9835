"""The HTTP routes: the Open Inference Protocol, scoring, pictures, the page and the files.

A device module of the server: Starlette, numpy and the device modules beside
it. Each handler takes `(request, service)` and returns a response or raises
`ServeError`, which `_route` turns into `{"error": "<one line>"}` with its
status; `table()` lists the routes that `serve.create_app` mounts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import io
import logging
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

if __package__:
    from keras_vae import recipes

    from . import protocol, uploads
    from .protocol import ServeError
    from .service import Limits, Service
else:  # run from an export folder: the server's modules sit beside this file
    import protocol
    import recipes
    import uploads
    from protocol import ServeError
    from service import Limits, Service

log = logging.getLogger("keras_vae.serve")

# ---------------------------------------------------------------- routes


_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript",
                ".mjs": "text/javascript", ".css": "text/css", ".json": "application/json",
                ".wasm": "application/wasm", ".png": "image/png", ".svg": "image/svg+xml",
                ".onnx": "application/octet-stream", ".tflite": "application/octet-stream",
                ".map": "application/json", ".txt": "text/plain; charset=utf-8"}


def json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(protocol.dumps(obj), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    """A refusal: `{"error": message}` with `status`."""
    return json_response({"error": message}, status, headers)


def _route(handler):
    """Wraps a handler `(request, service) -> Response` so refusals become `{"error": ...}`."""

    async def endpoint(request: Request) -> Response:
        service = request.app.state.service
        try:
            return await handler(request, service)
        except ServeError as e:
            service.errors[e.status] += 1
            return error_response(e.status, e.message, e.headers)

    endpoint.__name__ = handler.__name__
    return endpoint


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, bounded in size and time, decompressed if gzip/deflate.

    Raises:
        ServeError: 413 above `max_body_bytes` (declared or streamed), 408 when
            the body does not arrive within `body_timeout_s`, 400 when the
            client goes away or the compressed body is corrupt, 415 for an
            unknown Content-Encoding.
    """
    limit, close = limits.max_body_bytes, {"Connection": "close"}
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(400, f"Content-Length {declared!r} is not a number", close)
        if int(declared) > limit:
            raise ServeError(413, f"the body has {int(declared)} bytes, above the limit of "
                                  f"{limit} bytes (--max-body-bytes)", close)

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ServeError(413, f"the body is larger than the limit of {limit} bytes "
                                      "(--max-body-bytes)", close)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request
            async with asyncio.timeout(limits.body_timeout_s):
                body = await collect()
        else:
            body = await asyncio.wait_for(collect(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise ServeError(408, f"the body did not arrive within {limits.body_timeout_s:g} s",
                         close) from None
    except ClientDisconnect:
        raise ServeError(400, "the client went away before sending its whole body",
                         close) from None
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ServeError(415, f"Content-Encoding {encoding!r} is not supported (gzip, "
                              "deflate or identity)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise ServeError(400, f"the {encoding} body is corrupt ({e})") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise ServeError(413, f"the decompressed body is larger than the limit of {limit} "
                              "bytes (--max-body-bytes)")
    if not inflater.eof:
        raise ServeError(400, f"the {encoding} body is truncated")
    return plain


def _int_param(request: Request, name: str, default: int | None, low: int,
               high: int | None = None, limit_flag: str | None = None) -> int:
    """An integer query parameter: 400 when malformed or below `low`, 413 above `high`."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ServeError(400, f"query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServeError(400, f"query parameter {name}={raw!r} is not an integer") from None
    if value < low:
        raise ServeError(400, f"query parameter {name} must be >= {low}, got {value}")
    if high is not None and value > high:
        flag = f" ({limit_flag})" if limit_flag else ""
        raise ServeError(413 if limit_flag else 400,
                         f"query parameter {name}={value} is above the limit of {high}{flag}")
    return value


def _int_list(raw: str | None, name: str) -> list | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        return [int(v) for v in raw.split(",")]
    except ValueError:
        raise ServeError(400, f"{name}={raw!r} must be an integer or a comma-separated "
                              "list of integers") from None


# Names of the class labels that the routes took before `class_ids`; accepted
# for one release, each logged once per process when first used.
DEPRECATED_CLASS_IDS = ("class_id", "labels", "label")
_warned: set = set()


def _deprecated(name: str, where: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning("%s %r is deprecated; use 'class_ids' (the old name goes in the next "
                    "release)", where, name)


def class_ids(values, where: str):
    """The `class_ids` entry of a query string, form or JSON object (None when absent).

    `values` is anything with `.get(name)`; a deprecated name is read when
    `class_ids` is absent, with a deprecation line in the log.
    """
    value = values.get("class_ids")
    if value is not None:
        return value
    for name in DEPRECATED_CLASS_IDS:
        value = values.get(name)
        if value is not None:
            _deprecated(name, where)
            return value
    return None


# Protocol: health, metadata, inference.


@_route
async def live(request, service):
    return json_response({"live": True})


@_route
async def ready(request, service):
    return json_response({"ready": True})


@_route
async def server_metadata(request, service):
    return json_response({"name": "keras-vae", "version": service.manifest.get(
        "keras_vae_version", "unknown"), "extensions": ["binary_tensor_data"]})


@_route
async def model_metadata(request, service):
    p = request.path_params
    return json_response(service.model(p["name"], p.get("version")).metadata())


@_route
async def model_ready(request, service):
    p = request.path_params
    model = service.model(p["name"], p.get("version"))
    return json_response({"name": model.name, "ready": True})


@_route
async def infer(request, service):
    p = request.path_params
    model = service.model(p["name"], p.get("version"))
    body = await read_body(request, service.limits)
    parsed = service.parse_infer(model, body,
                                 request.headers.get("inference-header-content-length"))
    outputs = await service.batchers[model.name].run(parsed.feeds)
    answer, header_length = protocol.infer_response(model.name, model.outputs, outputs, parsed)
    if header_length is None:
        return Response(answer, media_type="application/json")
    return Response(answer, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


# keras-vae: scoring and pictures.


@_route
async def score(request, service):
    if "scorer" not in service.models:
        raise ServeError(404, "this export has no ONNX scorer; export with graphs "
                              "including 'scorer'")
    body = await read_body(request, service.limits)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    labels = _int_list(class_ids(request.query_params, "query parameter"), "class_ids")
    if body.startswith(uploads.PNG_SIGNATURE):
        images = uploads.decode_png(body, service.image_shape)[None]
    elif ctype == "multipart/form-data":
        images, form_labels = await _uploads(request, body, service)
        labels = form_labels if form_labels is not None else labels
    elif ctype in ("", "application/json", "text/json") or body.lstrip()[:1] == b"{":
        request_json = protocol.loads(body)
        if not isinstance(request_json, dict) or "images" not in request_json:
            raise ServeError(400, "the JSON body must be an object {\"images\": [...]} "
                                  "(one image or a batch, nested lists)")
        images = service.images_from_json(request_json["images"])
        json_labels = class_ids(request_json, "JSON key")
        if json_labels is not None:
            labels = json_labels
    elif ctype.startswith("image/"):
        raise ServeError(415, f"{ctype} uploads are not accepted: send PNG images")
    else:
        raise ServeError(415, f"Content-Type {ctype!r} is not accepted: send a PNG, a "
                              "multipart/form-data upload of PNGs or JSON {\"images\": [...]}")
    feeds = service.score_inputs(images, labels)
    (scores,) = await service.batchers["scorer"].run(feeds)
    scores = [float(s) for s in scores]
    anomaly = service.anomaly or {}
    threshold = anomaly.get("threshold")
    return json_response({
        "scores": scores,
        "threshold": threshold,
        "is_anomaly": None if threshold is None else [s > threshold for s in scores],
        "score": anomaly.get("score", "negative_elbo"),
        "quantile": anomaly.get("quantile"),
        "meaning": "negative ELBO in nats at the posterior mean (eps = 0); higher is more "
                   "anomalous",
    })


async def _uploads(request: Request, body: bytes, service: Service):
    """PNG files (and an optional `class_ids` field) of a multipart upload."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=service.limits.max_examples + 1, max_fields=16,
            max_part_size=service.limits.max_body_bytes)
    except HTTPException as e:
        raise ServeError(400, f"malformed multipart upload: {e.detail}") from None
    except AssertionError as e:  # python-multipart is missing
        raise ServeError(415, f"multipart uploads need python-multipart ({e}); send the PNG "
                              "as the raw body with Content-Type image/png") from None
    try:
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not files:
            raise ServeError(400, "the multipart upload has no file; attach PNG images")
        service.check_examples(len(files), "images")
        images = []
        for upload in files:
            data = await upload.read()
            try:
                images.append(uploads.decode_png(data, service.image_shape))
            except ServeError as e:
                raise ServeError(e.status, f"{upload.filename or 'upload'}: {e.message}") \
                    from None
        raw_labels = class_ids(form, "form field")
        labels = _int_list(raw_labels if isinstance(raw_labels, str) else None, "class_ids")
    finally:
        await form.close()
    return np.stack(images), labels


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG file of `(h, w)` grey or `(h, w, 3)` RGB uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


async def _picture(request, service, z: np.ndarray, ncols: int | None) -> Response:
    """Decodes `z` through the coalescing decoder and answers a PNG grid."""
    if "decoder" not in service.models:
        raise ServeError(404, "this export has no ONNX decoder")
    if service.image_shape[-1] not in (1, 3):
        raise ServeError(400, f"images of shape {list(service.image_shape)} have no PNG form "
                              "(1 or 3 channels)")
    labels = _int_list(class_ids(request.query_params, "query parameter"), "class_ids")
    if labels is not None and len(labels) not in (1, len(z)):
        labels = np.resize(labels, len(z)).tolist()  # cycled over the images
    feeds = {"z": z}
    labels = service.check_labels(labels, len(z), "class_ids")
    if labels is not None:
        feeds["label"] = labels
    scale = _int_param(request, "scale", 1, 1, 16)
    (images,) = await service.batchers["decoder"].run(feeds)  # (n, *image_shape)
    picture = recipes.grid(images, ncols)
    if scale > 1:
        picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
    return Response(encode_png(picture), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@_route
async def sample_png(request, service):
    n = _int_param(request, "n", 16, 1, service.limits.max_examples, "--max-examples")
    seed = _int_param(request, "seed", 0, 0, recipes.MAX_SEED)
    z = recipes.sample_prior(service.prior, n, service.latent_dim, seed)  # as VAE.sample
    return await _picture(request, service, z, None)


@_route
async def interpolate_png(request, service):
    steps = _int_param(request, "steps", 8, 2, service.limits.max_examples, "--max-examples")
    seed_a = _int_param(request, "seed_a", 0, 0, recipes.MAX_SEED)
    seed_b = _int_param(request, "seed_b", 1, 0, recipes.MAX_SEED)
    z = recipes.interpolate(seed_a, seed_b, steps, service.latent_dim, service.prior)
    return await _picture(request, service, z, steps)


@_route
async def info(request, service):
    m = service.manifest
    return json_response({
        "latent_dim": service.latent_dim, "image_shape": list(service.image_shape),
        "num_classes": service.num_classes, "class_names": m.get("class_names"),
        "value_range": m["image"].get("value_range"), "prior": m.get("prior"),
        "models": list(service.models), "anomaly": service.anomaly,
        "max_examples": service.limits.max_examples})


@_route
async def stats(request, service):
    return json_response({
        "models": {name: {**b.stats, "queued": b.admitted} for name, b in service.batchers.items()},
        "refused": {str(k): v for k, v in sorted(service.errors.items())},
        "limits": dataclasses.asdict(service.limits),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "json_library": protocol.json_library(),
        "worker": service.worker,  # with --workers N: this worker's counters only
        "gc": {"frozen_objects": gc.get_freeze_count(), "thresholds": gc.get_threshold()},
    })


# Static files: the page, onnxruntime-web, the manifest and exported files.


def _file(path: Path | None, what: str) -> Response:
    if path is None:
        raise ServeError(404, f"{what} not found")
    return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix.lower()))


def _inside(root: Path, relative: str) -> Path | None:
    """`root/relative` if it is a file inside `root` (no `..` escapes), else None."""
    try:
        root = root.resolve()
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path.is_file() and path.is_relative_to(root) else None


@_route
async def index(request, service):
    page = _inside(service.web_dir, "index.html")
    if page is None:
        raise ServeError(404, f"the page is not installed: no index.html in {service.web_dir}")
    return _file(page, "index.html")


@_route
async def web_file(request, service):
    rel = request.path_params["path"]
    return _file(_inside(service.web_dir, rel), f"/web/{rel}")


@_route
async def ort_file(request, service):
    rel = request.path_params["path"]
    roots = [service.export_dir / "web" / "ort", service.web_dir / "ort",
             service.web_dir / "node_modules" / "onnxruntime-web" / "dist"]
    for root in roots:
        path = _inside(root, rel)
        if path is not None:
            return _file(path, rel)
    raise ServeError(404, f"onnxruntime-web file {rel!r} not found in "
                          f"{', '.join(map(str, roots))}; run `npm ci` in {service.web_dir}")


@_route
async def exported_file(request, service):
    rel = request.path_params["path"]
    if rel not in service.files:
        raise ServeError(404, f"{rel!r} is not a file of this export "
                              f"({', '.join(sorted(service.files))})")
    return _file(service.files[rel], rel)


@_route
async def manifest_json(request, service):
    return json_response(service.manifest)


async def http_error(request: Request, exc: HTTPException) -> Response:
    message = {404: f"not found: {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}
    return error_response(exc.status_code, message.get(exc.status_code, str(exc.detail)),
                  getattr(exc, "headers", None))


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}")



def table() -> list[Route]:
    """The routes of the service, as `serve.create_app` mounts them."""
    v = "/v2/models/{name}"
    vv = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(v, model_metadata), Route(vv, model_metadata),
        Route(f"{v}/ready", model_ready), Route(f"{vv}/ready", model_ready),
        Route(f"{v}/infer", infer, methods=["POST"]),
        Route(f"{vv}/infer", infer, methods=["POST"]),
        Route("/v1/score", score, methods=["POST"]),
        Route("/v1/sample.png", sample_png),
        Route("/v1/interpolate.png", interpolate_png),
        Route("/v1/info", info),
        Route("/v1/stats", stats),
        Route("/manifest.json", manifest_json),
        Route("/files/{path:path}", exported_file),
        Route("/", index),
        Route("/web/{path:path}", web_file),
        Route("/ort/{path:path}", ort_file),
    ]
