"""Installs keras_vae; the top-level `export/` folder is its subpackage `keras_vae.export`."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "keras_vae/version.py").read_text())[1]

EXPORT = [
    "onnx>=1.16,<1.24",
    "tf2onnx>=1.16,<1.18",
    "onnxruntime>=1.18,<1.32",
    "ai-edge-litert>=1.2,<2.4",
]
# The HTTP server (export/serve.py): numpy, onnxruntime and an ASGI stack; no TensorFlow.
SERVE = [
    "onnxruntime>=1.18,<1.32",
    "starlette>=0.37",
    "uvicorn>=0.30",
    "python-multipart>=0.0.9",
    "httptools>=0.6",  # speed-ups, used when present
    "uvloop>=0.19; sys_platform != 'win32'",
    "orjson>=3.9",
    "pillow>=10",  # uploaded images are decoded by Pillow, with its bomb limit
]
DEV = [
    "pytest>=8",
    "nbclient>=0.10",
    "nbformat>=5.9",
    "ipykernel>=6.29",
    "ruff>=0.5",
    "playwright>=1.40",  # drives Debian's chromium in the browser tests; downloads no browser
    "tritonclient[http]>=2.40",  # an outside client of the serving tests
    "flask>=3.0",  # the plain Flask + predict server the serving benchmark compares with
]

setup(
    name="keras-vae",
    version=VERSION,
    description="Variational autoencoders for Keras 3: train with model.fit, evaluate "
                "honestly, export to SavedModel, ONNX and TFLite.",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # `export/` is installed as keras_vae.export: the exporters, and the numpy-only
    # device code (edge samplers, server, browser page) that an export bundle copies.
    packages=["keras_vae", "keras_vae.data", "keras_vae.parts", "keras_vae.models",
              "keras_vae.training", "keras_vae.evaluation", "keras_vae.uses", "keras_vae.export"],
    package_dir={"keras_vae": "keras_vae", "keras_vae.export": "export"},
    package_data={"keras_vae.export": ["web/*.html", "web/*.js", "web/*.css", "web/*.json"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3,<3.16",
        "tensorflow-datasets>=4.9,<4.10",
        "importlib_resources>=6",  # tensorflow-datasets needs it to download
        "numpy>=1.26,<3",
        "scikit-learn>=1.3",
        "pillow>=10",
        "matplotlib>=3.8",
    ],
    # "bench": the PyTorch reference of benchmarks/ only (large; not in "all").
    extras_require={"export": EXPORT, "serve": SERVE, "dev": DEV,
                    "all": EXPORT + SERVE + DEV,
                    "bench": ["torch>=2.2"]},
    entry_points={"console_scripts": ["keras-vae=keras_vae.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
