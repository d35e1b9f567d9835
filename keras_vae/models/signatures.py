"""What a model offers for export: named graphs of explicit inputs, listed by the model.

A model's `export_graphs()` returns `{name: GraphSignature}`; the exporter
(`keras_vae.export`) traces each one, converts it and checks it against the
model. A new model family lists its own graphs here instead of editing the
exporter.

Example:

>>> GraphSignature(
...     inputs=[("z", (16,), "float32")], outputs=("x",),
...     fn=lambda z: {"x": vae.decode(z)},
...     meaning="x: image means for latents z", value_range=(0.0, 1.0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class GraphSignature:
    """One exportable graph.

    Attributes:
        inputs: `[(name, shape without batch, dtype)]`; every input is explicit
            (noise, labels): exported graphs hold no random ops.
        outputs: Output names, in the manifest's order.
        fn: `fn(**inputs) -> {output name: tensor}` on the model.
        meaning: What the outputs are, for the manifest.
        value_range: `(low, high)` of image outputs (the PSNR peak of parity
            checks), None when unbounded or not images.
        input_ranges: `{input name: (low, high)}` of integer inputs other than
            `label` (code indices), drawn in `[low, high)` by parity checks.
    """

    inputs: list
    outputs: tuple
    fn: Callable
    meaning: str
    value_range: tuple | None = None
    input_ranges: dict | None = None
