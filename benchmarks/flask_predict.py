"""The plain way to serve a VAE: a Flask app that calls Keras `model.predict` per request.

This is the baseline of `bench_serving.py`, written the way the snippets
people copy do it: load the `.keras` file, wrap the decoder (with its sigmoid
mean link) and the per-example negative ELBO in Keras models, and answer each
request with one `predict` call on Flask's own threaded server.

    python benchmarks/flask_predict.py runs/demo/model.keras --port 5000

    POST /decode  {"z": [[...latent_dim floats...], ...]}   -> {"x": [...]}
    POST /score   {"images": [[...image...], ...]}          -> {"scores": [...]}
    GET  /health                                             -> {"ok": true}
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_app(model_path: str):
    """The Flask app over the VAE saved at `model_path`."""
    import keras
    import numpy as np
    from flask import Flask, jsonify, request

    from keras_vae import saving

    vae = saving.load_model(model_path, compile=False)
    decoder = keras.Model(vae.decoder.inputs,
                          keras.layers.Activation("sigmoid")(vae.decoder.outputs[0]))

    class Scorer(keras.Model):
        """Negative ELBO at the posterior mean (eps = 0), the exported scorer's number."""

        def call(self, x):
            eps = keras.ops.zeros((keras.ops.shape(x)[0], vae.latent_dim))
            return vae.negative_elbo(x, eps=eps)

    scorer = Scorer()
    # One call each before serving, so the first request does not build the predict function.
    decoder.predict(np.zeros((1, vae.latent_dim), np.float32), verbose=0)
    scorer.predict(np.zeros((1, *vae.image_shape), np.float32), verbose=0)

    app = Flask(__name__)

    @app.post("/decode")
    def decode():
        z = np.asarray(request.get_json()["z"], dtype=np.float32)
        return jsonify({"x": decoder.predict(z, verbose=0).tolist()})

    @app.post("/score")
    def score():
        x = np.asarray(request.get_json()["images"], dtype=np.float32)
        return jsonify({"scores": scorer.predict(x, verbose=0).tolist()})

    @app.get("/health")
    def health():
        return jsonify({"ok": True})

    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".keras file of a keras_vae.VAE")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    app = build_app(args.model)
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
