"""The benchmark modules import each other one way: no cycle, late imports counted.

The import reader and the cycle finder are the package's own
(`tests/package/test_layout.py`), run over `benchmarks/*.py`.
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def _layout():
    """`tests/package/test_layout.py` as a module, for its `_imports` and `_cycles`."""
    spec = importlib.util.spec_from_file_location("package_layout",
                                                  ROOT / "tests" / "package" / "test_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layout = _layout()


def _graph(folder: Path = BENCHMARKS) -> dict:
    """`{module: modules of the benchmarks it imports}` over `folder/*.py`."""
    modules = {"benchmarks" if path.stem == "__init__" else f"benchmarks.{path.stem}": path
               for path in folder.glob("*.py")}
    return {name: layout._imports(path, name, modules) for name, path in modules.items()}


def test_no_import_cycle_between_benchmark_modules():
    graph = _graph()
    # The edges are read, late ones (inside functions) included.
    assert graph["benchmarks.roofline"] == {"benchmarks.digits", "benchmarks.flops",
                                            "benchmarks.machine", "benchmarks.reference_torch",
                                            "benchmarks.systems"}
    assert "benchmarks.reference_kerasio" in graph["benchmarks.bench_sampling"]  # a late one
    cycles = layout._cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_shared_pieces_are_leaves():
    graph = _graph()
    assert graph["benchmarks.machine"] == set()
    assert graph["benchmarks.flops"] == set()
    assert graph["benchmarks.digits"] == {"benchmarks.machine"}
    assert graph["benchmarks.systems"] == {"benchmarks.digits", "benchmarks.flops",
                                           "benchmarks.reference_kerasio",
                                           "benchmarks.reference_torch"}


def test_a_late_import_that_closes_a_loop_is_a_cycle(tmp_path):
    (tmp_path / "machine.py").write_text("def splits():\n    from benchmarks import systems\n")
    (tmp_path / "systems.py").write_text("from benchmarks import roofline\n")
    (tmp_path / "roofline.py").write_text("from benchmarks import machine\n")
    cycles = layout._cycles(_graph(tmp_path))
    assert cycles == ["benchmarks.machine -> benchmarks.systems -> benchmarks.roofline "
                      "-> benchmarks.machine"]
