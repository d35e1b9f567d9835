"""Proof that an exported file computes what Keras computes.

Every export runs random inputs at two batch sizes (1 and 7) through the
runtime that will load the file and through Keras (eager, float32), then:

- integer outputs (code indices) must be equal;
- float32 files must agree within `FP32_TOLERANCE` (max abs error, relative to
  the output's scale: 1e-5 absolute for images in [0, 1], 1e-5 relative for
  the scorer's sums over pixels, whose float32 rounding grows with them);
- every float output lies in the graph's declared `value_range` (within
  `reader.VALUE_RANGE_TOLERANCE` of its width), in Keras and in the runtime;
- fp16 and int8 files report max abs error and PSNR against the float32
  Keras output and must reach `PSNR_BOUNDS[precision]` dB, with the peak
  the image value range (1 for [0, 1] images) or else the largest |output|.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_vae.export import reader
from keras_vae.export.errors import ExportError

BATCH_SIZES = (1, 7)
FP32_TOLERANCE = 1e-5
# Lower bounds on PSNR (dB) against float32. fp16 weights lose ~3 decimal
# digits (~60 dB on images); int8 weights ~40-50 dB; full-integer
# activations, calibrated on prior draws, ~30-40 dB on trained MNIST decoders.
PSNR_BOUNDS = {"fp16": 40.0, "int8_dynamic": 30.0, "int8_full": 25.0}


def psnr(reference: np.ndarray, actual: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical arrays)."""
    mse = float(np.mean((np.asarray(actual, np.float64) - reference) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def check(graph, run: Callable[[dict], dict], precision: str, what: str,
          peak: float | None = None, seed: int = 0) -> dict:
    """Compares `run` (a runtime) with Keras on random inputs at two batch sizes.

    Args:
        graph: A `keras_vae.export.graphs.Graph`.
        run: `run(feeds) -> {output name: array}` in the runtime under test.
        precision: `fp32`, `fp16`, `int8_dynamic` or `int8_full`.
        what: The file's name, for messages.
        peak: PSNR peak (the image value range), or None for the largest |output|.
        seed: Seed of the random inputs.

    Returns:
        The parity figures for the manifest.

    Raises:
        ExportError: wrong output names, shapes or dtypes, non-finite values,
            or error beyond the tolerance or bound.
    """
    rng = np.random.default_rng(seed)
    max_abs, squared, count, scale = 0.0, 0.0, 0, 0.0
    for batch in BATCH_SIZES:
        feeds = graph.random_inputs(batch, rng)
        reference = graph.keras_outputs(feeds)
        actual = run(feeds)
        if set(actual) != set(reference):
            raise ExportError(f"{what} returns {sorted(actual)}, Keras {sorted(reference)}")
        for name, ref in reference.items():
            out = np.asarray(actual[name])
            if ref.dtype.kind in "iu":  # integer outputs (code indices) must match exactly
                if out.shape != ref.shape or out.dtype != ref.dtype:
                    raise ExportError(
                        f"{what} output {name!r} at batch {batch} is {out.dtype}"
                        f"{list(out.shape)}, Keras gives {ref.dtype}{list(ref.shape)}")
                mismatches = int(np.sum(out != ref))
                if mismatches:
                    raise ExportError(f"{what} output {name!r} differs from Keras in "
                                      f"{mismatches} of {ref.size} values at batch {batch}")
                continue
            if out.shape != ref.shape or out.dtype != np.float32:
                raise ExportError(
                    f"{what} output {name!r} at batch {batch} is {out.dtype}{list(out.shape)}, "
                    f"Keras gives float32{list(ref.shape)}"
                )
            if not np.all(np.isfinite(out)):
                raise ExportError(f"{what} output {name!r} has non-finite values at batch {batch}")
            for source, values in (("Keras", ref), (what, out)):  # the range the manifest declares
                try:
                    reader.check_value_range(values, graph.signature.value_range,
                                             f"{source} output {name!r} at batch {batch}")
                except reader.EdgeError as e:
                    raise ExportError(str(e)) from None
            diff = np.abs(out.astype(np.float64) - ref)
            max_abs = max(max_abs, float(diff.max()))
            squared += float(np.sum(diff**2))
            count += diff.size
            scale = max(scale, float(np.abs(ref).max()))
    peak = peak or max(scale, 1e-12)
    mse = squared / count if count else 0.0
    figures = {
        "reference": "keras float32",
        "batch_sizes": list(BATCH_SIZES),
        "max_abs_error": max_abs,
        "psnr_db": None if mse == 0 else round(float(10 * np.log10(peak**2 / mse)), 2),
        "psnr_peak": peak,
    }
    if precision == "fp32":
        tolerance = FP32_TOLERANCE * max(1.0, scale)
        figures["tolerance"] = tolerance
        if not max_abs <= tolerance:
            raise ExportError(
                f"{what} differs from Keras by {max_abs:.3g} (max abs), above the float32 "
                f"tolerance {tolerance:.3g}"
            )
    else:
        bound = PSNR_BOUNDS[precision]
        figures["psnr_bound_db"] = bound
        if figures["psnr_db"] is not None and figures["psnr_db"] < bound:
            raise ExportError(
                f"{what} ({precision}) reaches {figures['psnr_db']} dB PSNR against float32 "
                f"Keras (max abs error {max_abs:.3g}), below the bound of {bound} dB"
            )
    return figures
