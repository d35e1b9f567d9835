"""export/web/npy_random.js draws the same bits as numpy's default_rng, checked in node."""

import base64
import ctypes
import ctypes.util
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

DUMP = Path(__file__).with_name("npy_random_dump.mjs")

pytestmark = pytest.mark.skipif(shutil.which("node") is None,
                                reason="node is not installed (needed to run npy_random.js)")

# Seeds as numpy takes them, and the ways the page passes them to JavaScript.
SEEDS = [0, 1, 2, 42, 12345, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**64,
         2**128 + 7, 2**160 - 1]  # 2**128 and up: more words than the 4-word pool


def _int(seed: int) -> dict:
    return {"int": str(seed)}


def run_node(web_dir: Path, jobs: list) -> list:
    """Runs the jobs through npy_random.js; raises on a job's JavaScript error."""
    request = {"module": str(web_dir / "npy_random.js"), "jobs": jobs}
    proc = subprocess.run(["node", str(DUMP)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for job, result in zip(jobs, results):
        assert "ok" in result, f"{job['kind']}: {result['error']}"
    return [r["ok"] for r in results]


def _array(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


def assert_same_bits(js: np.ndarray, ref: np.ndarray, what: str):
    js, ref = np.ascontiguousarray(js).ravel(), np.ascontiguousarray(ref).ravel()
    assert js.shape == ref.shape, f"{what}: {js.shape} != {ref.shape}"
    view = {4: np.uint32, 8: np.uint64}[ref.dtype.itemsize]
    bad = np.flatnonzero(js.view(view) != ref.view(view))
    assert bad.size == 0, (
        f"{what}: {bad.size} of {ref.size} values differ, first at {bad[0]}: "
        f"js {js[bad[0]]!r} numpy {ref[bad[0]]!r}")


def test_seed_sequence_and_pcg64_state(web_dir):
    jobs = [{"kind": "state", "seed": _int(s), "words": 8} for s in SEEDS]
    for seed, out in zip(SEEDS, run_node(web_dir, jobs)):
        words = np.random.SeedSequence(seed).generate_state(8)
        assert out["words"] == words.tolist(), seed
        state = np.random.PCG64(seed).state["state"]
        assert (int(out["state"]), int(out["inc"])) == (state["state"], state["inc"]), seed


def test_prior_z_equals_numpy_bit_for_bit(web_dir, recipes):
    cases = [(s, 5, 3) for s in SEEDS] + [(7, 1, 1), (3, 0, 4), (11, 9, 7)]  # odd counts too
    jobs = [{"kind": "prior", "seed": _int(s), "n": n, "d": d} for s, n, d in cases]
    # The seed as a JS Number and as a decimal string reach the same generator.
    jobs += [{"kind": "prior", "seed": {"number": 42}, "n": 4, "d": 8},
             {"kind": "prior", "seed": {"string": str(2**63 - 1)}, "n": 4, "d": 8}]
    cases += [(42, 4, 8), (2**63 - 1, 4, 8)]
    for (seed, n, d), out in zip(cases, run_node(web_dir, jobs)):
        ref = recipes.prior_z(n, d, seed)
        assert ref.dtype == np.float32
        assert_same_bits(_array(out["z"], np.float32), ref, f"prior_z({n}, {d}, {seed})")


def test_large_draws_cover_the_tail_and_wedge(web_dir):
    """200,000 draws a seed: about 50 land in the tail beyond r = 3.654, thousands in wedges.

    Seeds 4 and 5 draw tail values that a correctly rounded log1pf (instead of the C
    library's) would change in the last bit.
    """
    seeds = [0, 4, 5, 2**63 - 1]
    jobs = [{"kind": "prior", "seed": _int(s), "n": 40_000, "d": 5} for s in seeds]
    start = time.perf_counter()
    outs = run_node(web_dir, jobs)
    elapsed = time.perf_counter() - start
    for seed, out in zip(seeds, outs):
        ref = np.random.default_rng(seed).standard_normal((40_000, 5), dtype=np.float32)
        assert np.sum(np.abs(ref) > 3.6541529) >= 20, "too few tail draws to test the tail"
        assert_same_bits(_array(out["z"], np.float32), ref, f"200,000 draws, seed {seed}")
    assert elapsed < 60, f"npy_random.js took {elapsed:.1f} s for 800,000 draws"


def test_uint32_buffer_survives_float64_draws(web_dir):
    """numpy keeps the spare half of a 64-bit draw across `random()` calls; so must we."""
    ops = [["normal", 3], ["random", 2], ["normal", 5], ["random", 1], ["normal", 2]]
    (out,) = run_node(web_dir, [{"kind": "ops", "seed": _int(99), "ops": ops}])
    rng = np.random.default_rng(99)
    for (op, count), text in zip(ops, out):
        if op == "normal":
            assert_same_bits(_array(text, np.float32),
                             rng.standard_normal(count, dtype=np.float32), "normal")
        else:
            assert_same_bits(_array(text, np.float64), rng.random(count), "random")


def test_choice_with_probabilities(web_dir):
    p = [0.1, 0.25, 0.05, 0.6]
    ops = [["choice", 4, 2000, p], ["normal", 3]]
    (out,) = run_node(web_dir, [{"kind": "ops", "seed": _int(5), "ops": ops}])
    rng = np.random.default_rng(5)
    comps = rng.choice(4, size=2000, p=p)
    np.testing.assert_array_equal(_array(out[0], np.int32), comps)
    assert np.bincount(comps, minlength=4).min() > 50  # every component drawn
    assert_same_bits(_array(out[1], np.float32), rng.standard_normal(3, dtype=np.float32),
                     "normal after choice")


def test_mixture_prior(web_dir):
    rng = np.random.default_rng(0)
    k, d, n = 3, 4, 500
    weights = np.array([0.2, 0.5, 0.3])
    means = rng.normal(size=(k, d)) * 3
    log_vars = rng.normal(size=(k, d)) * 0.5
    job = {"kind": "mixture", "seed": _int(123), "n": n, "weights": weights.tolist(),
           "means": means.ravel().tolist(), "log_vars": log_vars.ravel().tolist()}
    (out,) = run_node(web_dir, [job])
    # The numpy calls mixturePriorZ documents, arrays in float64.
    ref_rng = np.random.default_rng(123)
    comps = ref_rng.choice(k, size=n, p=weights)
    eps = ref_rng.standard_normal((n, d), dtype=np.float32)
    z = (means[comps] + np.exp(0.5 * log_vars[comps]) * eps).astype(np.float32)
    np.testing.assert_array_equal(_array(out["comps"], np.int32), comps)
    assert_same_bits(_array(out["eps"], np.float32), eps, "mixture eps")
    js_z = _array(out["z"], np.float32)
    # float64 maths rounded to float32: V8's exp may differ from numpy's in the last
    # double bit, which can move z by one float32 ulp; allow that and nothing more.
    ulps = np.abs(js_z.view(np.int32).astype(np.int64) - z.ravel().view(np.int32))
    assert ulps.max() <= 1, f"mixture z off by {ulps.max()} float32 ulps"
    np.testing.assert_allclose(js_z.reshape(n, d)[comps == 1].mean(0), means[1], atol=0.3)


def test_interpolate_matches_the_recipe(web_dir, recipes):
    cases = [(0, 1, 8, 3), (5, 5, 4, 8), (3, 2**63 - 1, 2, 16), (42, 7, 11, 2)]
    jobs = [{"kind": "interpolate", "a": _int(a), "b": _int(b), "steps": s, "d": d}
            for a, b, s, d in cases]
    for (a, b, steps, d), text in zip(cases, run_node(web_dir, jobs)):
        ref = recipes.interpolate(a, b, steps, d)
        js = _array(text, np.float32).reshape(steps, d)
        # Endpoints exactly; between them float64 maths with another libm's sin/acos
        # and dot product order, rounded to float32.
        assert_same_bits(js[[0, -1]], ref[[0, -1]], f"endpoints {a}->{b}")
        np.testing.assert_allclose(js, ref, rtol=2e-7, atol=1e-7)


def test_bad_arguments_are_clear_errors(web_dir):
    request = {"module": str(web_dir / "npy_random.js"), "jobs": [
        {"kind": "prior", "seed": {"int": "-1"}, "n": 1, "d": 1},
        {"kind": "prior", "seed": {"number": 1.5}, "n": 1, "d": 1},
        {"kind": "prior", "seed": {"string": "seven"}, "n": 1, "d": 1},
        {"kind": "interpolate", "a": _int(0), "b": _int(1), "steps": 1, "d": 2},
        {"kind": "ops", "seed": _int(0), "ops": [["choice", 2, 3, [0.5, 0.6]]]},
    ]}
    proc = subprocess.run(["node", str(DUMP)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=60, check=True)
    errors = [r.get("error", "") for r in json.loads(proc.stdout)]
    assert errors[0] == "RangeError: seed must be non-negative, got -1"
    assert errors[1].startswith("RangeError: seed must be an integer below 2**53")
    assert errors[2] == 'RangeError: seed must be a non-negative integer, got "seven"'
    assert errors[3] == "RangeError: steps must be an integer >= 2, got 1"
    assert errors[4].startswith("RangeError: choice: probabilities do not sum to 1")


def _libm_log1pf():
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    fn = getattr(ctypes.CDLL(name), "log1pf", None)
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_float], ctypes.c_float
    return fn


def test_log1pf_matches_the_c_library(web_dir):
    """The ziggurat's tail calls the C library's log1pf (as numpy's compiled code does).

    Checked on every 61st of the 2**24 arguments `-next_float()` can take, plus the
    smallest and largest 4096; the full sweep matched glibc 2.36 when this was written.
    """
    libm_log1pf = _libm_log1pf()
    if libm_log1pf is None:
        pytest.skip("no C library log1pf to compare with")
    k = np.unique(np.concatenate([np.arange(0, 2**24, 61), np.arange(4096),
                                  np.arange(2**24 - 4096, 2**24)])).astype(np.uint32)
    (text,) = run_node(web_dir, [{"kind": "log1pf", "k": base64.b64encode(k.tobytes()).decode()}])
    u = k.astype(np.float32) * np.float32(1 / 16777216)
    ref = np.array([libm_log1pf(-float(v)) for v in u], dtype=np.float32)
    assert_same_bits(_array(text, np.float32), ref,
                     "log1pf (a C library whose log1pf rounds otherwise makes numpy's tail "
                     "draws differ from npy_random.js)")
