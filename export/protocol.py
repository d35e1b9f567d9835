"""The Open Inference Protocol (KServe v2, REST) codec: tensors in and out, refusals, JSON.

A device module of the server: numpy and the standard library (orjson when
present), nothing of keras_vae. `parse_infer` reads an inference request
(JSON tensors, or a JSON header followed by the binary tensor data
extension) into numpy feeds checked against a model's `TensorSpec`s;
`infer_response` writes the answer the same two ways. Every refusal is a
`ServeError`: an HTTP status and a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

try:
    import orjson  # optional: 10-20x faster float formatting than json
except ImportError:
    orjson = None

MODEL_VERSION = "1"

# Datatype names of the protocol <-> numpy dtypes of the manifest.
DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int32": "INT32",
             "int64": "INT64", "uint8": "UINT8", "bool": "BOOL"}
NUMPY_OF = {v: np.dtype(k) for k, v in DATATYPES.items()}


class ServeError(Exception):
    """A request the service refuses: an HTTP status and a one-line reason.

    Args:
        status: HTTP status code (4xx for the client's mistakes, 503 when busy).
        message: What is wrong, naming the offending field or limit.
        headers: Extra response headers (`Retry-After`, `Connection`).
    """

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model, as the manifest describes it."""

    name: str
    datatype: str  # protocol name: FP32, INT32, ...
    shape: tuple  # -1 for the batch dimension

    @classmethod
    def from_manifest(cls, spec: dict) -> TensorSpec:
        """The spec of a manifest tensor entry.

        Raises:
            ValueError: a dtype the protocol has no name for.
        """
        dtype = spec["dtype"]
        if dtype not in DATATYPES:
            raise ValueError(f"tensor {spec['name']!r} has dtype {dtype}, which the "
                             f"server does not map ({sorted(DATATYPES)})")
        return cls(spec["name"], DATATYPES[dtype],
                   tuple(-1 if d is None else int(d) for d in spec["shape"]))

    @property
    def dtype(self) -> np.dtype:
        return NUMPY_OF[self.datatype]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclasses.dataclass
class InferRequest:
    """An inference request as `parse_infer` read it.

    Attributes:
        feeds: Input name -> array, every one `(n, ...)` with the same `n >= 1`.
        outputs: The output names asked for, in the order asked.
        binary: Output name -> whether it goes back as binary tensor data.
        id: The request's `id`, echoed in the answer (None when absent).
    """

    feeds: dict
    outputs: list
    binary: dict
    id: object = None


def parse_infer(inputs: list[TensorSpec], outputs: list[TensorSpec], body: bytes,
                header_length: str | None, max_examples: int, model: str) -> InferRequest:
    """Reads an inference request for a model with these `inputs` and `outputs`.

    Args:
        inputs: The model's input specs.
        outputs: The model's output specs.
        body: The whole request body.
        header_length: The `Inference-Header-Content-Length` header (None:
            the body is JSON only).
        max_examples: Most examples in one request.
        model: The model's name, for messages.

    Returns:
        The `InferRequest`. Values are not checked (NaN, pixel range, label
        range): that is the service's part.

    Raises:
        ServeError: 400 naming what is malformed, 413 for too many examples.
    """
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            raise ServeError(400, "Inference-Header-Content-Length is not an integer") from None
        if not 0 < json_size <= len(body):
            raise ServeError(400, f"Inference-Header-Content-Length {json_size} does not "
                                  f"fit a body of {len(body)} bytes")
        head, binary = body[:json_size], memoryview(body)[json_size:]
    else:
        head, binary = body, memoryview(b"")
    request = loads(head)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ServeError(400, "the request must be a JSON object with a list 'inputs'")
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise ServeError(400, "'parameters' must be a JSON object")
    specs = {s.name: s for s in inputs}
    feeds, offset = {}, 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ServeError(400, "every entry of 'inputs' needs a 'name'")
        name = tensor["name"]
        if name not in specs:
            raise ServeError(400, f"model {model!r} has no input {name!r}; its inputs "
                                  f"are {', '.join(specs)}")
        if name in feeds:
            raise ServeError(400, f"input {name!r} is given twice")
        feeds[name], offset = _tensor(tensor, specs[name], binary, offset, max_examples)
    if offset != len(binary):
        raise ServeError(400, f"the body has {len(binary) - offset} bytes of binary data "
                              "that no input claims (binary_data_size)")
    missing = [s for s in specs if s not in feeds]
    if missing:
        raise ServeError(400, f"model {model!r} needs the inputs {missing}")
    sizes = {a.shape[0] for a in feeds.values()}
    if len(sizes) != 1:
        raise ServeError(400, "all inputs must have the same batch size, got "
                              + ", ".join(f"{k}: {v.shape[0]}" for k, v in feeds.items()))
    n = sizes.pop()
    if n < 1:
        raise ServeError(400, "the batch is empty (first dimension 0)")
    check_examples(n, max_examples)
    all_binary = bool(params.get("binary_data_output", False))
    wanted, binary_out = _requested_outputs(outputs, request.get("outputs"), all_binary, model)
    return InferRequest(feeds, wanted, binary_out, request.get("id"))


def check_examples(n: int, max_examples: int, what: str = "examples") -> None:
    """Raises a 413 `ServeError` for more than `max_examples` in one request."""
    if n > max_examples:
        raise ServeError(413, f"{n} {what} in one request is above the limit of "
                              f"{max_examples} (--max-examples)")


def _tensor(tensor: dict, spec: TensorSpec, binary: memoryview, offset: int,
            max_examples: int):
    """One input tensor of the request as a numpy array, checked against `spec`."""
    name = spec.name
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        raise ServeError(400, f"input {name!r} has datatype {datatype!r}; model expects "
                              f"{spec.datatype}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                               and d >= 0 for d in shape)):
        raise ServeError(400, f"input {name!r} needs a 'shape' list of non-negative ints")
    if len(shape) != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(shape, spec.shape)):
        raise ServeError(400, f"input {name!r} has shape {shape}; model expects "
                              f"{list(spec.shape)} (-1: any batch size)")
    if shape:  # before the data is read: the declared size is enough to refuse
        check_examples(shape[0], max_examples)
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ServeError(400, f"input {name!r}: 'parameters' must be a JSON object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        want = count * spec.dtype.itemsize
        if not isinstance(size, int) or size != want:
            raise ServeError(400, f"input {name!r}: binary_data_size {size!r} does not "
                                  f"match shape {shape} of {datatype} ({want} bytes)")
        if offset + size > len(binary):
            raise ServeError(400, f"input {name!r}: the body ends before its "
                                  f"{size} bytes of binary data")
        array = np.frombuffer(binary[offset:offset + size],
                              spec.dtype.newbyteorder("<")).astype(spec.dtype)
        return array.reshape(shape), offset + size
    if "data" not in tensor:
        raise ServeError(400, f"input {name!r} has neither 'data' nor "
                              "parameters.binary_data_size")
    try:
        array = np.asarray(tensor["data"])
    except (ValueError, TypeError):
        raise ServeError(400, f"input {name!r}: 'data' is ragged (rows of different "
                              "lengths)") from None
    if array.size and array.dtype.kind not in ("iuf" if spec.dtype.kind == "f" else "iu"):
        kind = "numbers" if spec.dtype.kind == "f" else "integers"
        got = "ragged or mixed values" if array.dtype == object else array.dtype
        raise ServeError(400, f"input {name!r}: {datatype} data must be {kind}, got {got}")
    if array.size != count:
        raise ServeError(400, f"input {name!r} has {array.size} values but shape {shape} "
                              f"needs {count}")
    if spec.dtype.kind in "iu" and array.size:
        info = np.iinfo(spec.dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ServeError(400, f"input {name!r} has values outside {datatype}")
    return array.astype(spec.dtype).reshape(shape), offset


def _requested_outputs(specs: list[TensorSpec], outputs, all_binary: bool, model: str):
    names = [s.name for s in specs]
    if outputs is None:
        return names, dict.fromkeys(names, all_binary)
    if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise ServeError(400, "'outputs' must be a list of objects with a 'name'")
    wanted, binary = [], {}
    for o in outputs:
        if o["name"] not in names:
            raise ServeError(400, f"model {model!r} has no output {o['name']!r}; its "
                                  f"outputs are {', '.join(names)}")
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServeError(400, f"output {o['name']!r}: 'parameters' must be an object")
        if "classification" in params:
            raise ServeError(400, "the classification extension is not supported")
        wanted.append(o["name"])
        binary[o["name"]] = bool(params.get("binary_data", all_binary))
    return wanted, binary


def infer_response(model: str, specs: list[TensorSpec], outputs: list,
                   request: InferRequest) -> tuple[bytes, int | None]:
    """The inference answer: `(body, JSON header length)`.

    Args:
        model: The model's name.
        specs: The model's output specs, in the order of `outputs`.
        outputs: The model's output arrays.
        request: The parsed request (which outputs, which in binary, its id).

    Returns:
        The body, and the length of its JSON header when binary tensors
        follow it (the `Inference-Header-Content-Length`), else None.
    """
    by_name = {s.name: (s, out) for s, out in zip(specs, outputs)}
    tensors, blobs = [], []
    for name in request.outputs:
        spec, out = by_name[name]
        array = np.ascontiguousarray(out, spec.dtype)
        tensor = {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
        if request.binary[name]:
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1)
        tensors.append(tensor)
    body = {"model_name": model, "model_version": MODEL_VERSION, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    head = dumps(body)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def dumps(obj) -> bytes:
    """Compact JSON bytes; numpy arrays become flat-or-nested lists (orjson when present)."""
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), default=_tolist).encode()


def _tolist(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def loads(raw: bytes):
    """Parses a JSON body (orjson when present; the standard library for NaN tokens, errors).

    Raises:
        ServeError: 400 for a body that is not UTF-8 or not JSON.
    """
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity tokens, huge ints, or an error: json says which
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ServeError(400, "the JSON body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ServeError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise ServeError(400, "malformed JSON: nested too deeply") from None


def json_library() -> str:
    """The JSON library in use: `orjson` or `json`."""
    return "json" if orjson is None else "orjson"
