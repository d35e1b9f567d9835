"""The floor plan: no import cycles, the device side imports nothing of ours, names resolve."""

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"keras_vae": ROOT / "keras_vae", "keras_vae.export": ROOT / "export"}
# The device side: what an export folder runs with numpy and one runtime. In an
# export folder (script mode) they import each other as top-level modules.
DEVICE = ("recipes", "reader", "images", "sampler", "sample_onnx", "sample_litert")
# The one module of the library the device code imports: a numpy-only leaf that
# export/ links to (and every bundle copies).
SHARED_LEAF = "keras_vae.recipes"
# Where the library may import keras_vae.export: the `export` command of the CLI
# (its parser lists the formats, its function exports and calibrates), and the
# package facade that names the subpackage (whose __init__ loads nothing eagerly).
EXPORT_COMMAND = {"keras_vae.cli": {"build_parser", "cmd_export", "_calibrate"},
                  "keras_vae": set()}


def _modules() -> dict:
    """`{dotted name: path}` of every module of the package, `__init__` files included."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if "node_modules" in path.parts:
                continue
            name = ".".join([package, *parts])
            if name.startswith("keras_vae.export") and package == "keras_vae":
                continue
            found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict, skip=()) -> set:
    """Modules of ours that `path` imports, at any depth of its code (late imports too).

    `skip` names top-level functions whose bodies are not read.
    """
    edges = set()
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body
                 if not (isinstance(node, ast.FunctionDef) and node.name in skip)]
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


PACKAGE_INITS = ("keras_vae", "keras_vae.data", "keras_vae.export")


def _cycles(graph: dict) -> list:
    """Every cycle a depth-first walk of `{module: imported modules}` meets."""
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # A package's __init__ runs before its modules and re-exports them:
            # a module "importing" its own package is Python's order, not a loop.
            if nxt in PACKAGE_INITS and node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    assert graph["keras_vae.models.vae"] >= {"keras_vae.parts.priors", "keras_vae.data"}  # edges are read
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_test_finds_a_planted_cycle(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import keras_vae.b\n")
    b.write_text("def f():\n    from keras_vae import a\n")
    modules = {"keras_vae.a": a, "keras_vae.b": b}
    assert _imports(a, "keras_vae.a", modules) == {"keras_vae.b"}
    assert _imports(b, "keras_vae.b", modules) == {"keras_vae.a"}  # late imports count
    graph = {"keras_vae.a": {"keras_vae.b"}, "keras_vae.b": {"keras_vae.a"}}
    assert _cycles(graph) == ["keras_vae.a -> keras_vae.b -> keras_vae.a"]
    assert _cycles({"keras_vae.a": {"keras_vae.b"}, "keras_vae.b": set()}) == []


@pytest.mark.parametrize("module", DEVICE)
def test_device_code_imports_only_the_standard_library_numpy_and_its_runtime(module):
    modules = _modules()
    path = PACKAGES["keras_vae.export"] / f"{module}.py"
    ours = _imports(path, f"keras_vae.export.{module}", modules)
    assert ours <= {f"keras_vae.export.{m}" for m in DEVICE} | {SHARED_LEAF}, ours
    third_party = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            third_party |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            third_party.add(node.module.split(".")[0])
    # `keras_vae` only as the package-mode spelling of the shared leaf (checked above).
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "ai_edge_litert", "PIL",
                                             "keras_vae", *DEVICE}
    assert third_party <= allowed, third_party - allowed


def test_device_code_runs_with_tensorflow_keras_and_the_library_unimportable(tmp_path):
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "keras_vae", "tf2onnx"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(ROOT / "export")!r})
        import recipes, reader, images, sampler, sample_onnx, sample_litert
        z = recipes.sample_prior({{"type": "mixture", "weights": [1, 3], "means": [[0, 0], [5, 5]],
                                  "log_vars": [[0, 0], [-2, -2]]}}, 4, 2, seed=0)
        print(z.shape, recipes.slerp(z[0], z[1], 3).shape)
        assert sampler.reader is reader and sampler.images is images and images.recipes is recipes
        assert "keras_vae" not in sys.modules and "tensorflow" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(4, 2) (3, 2)"


def test_the_library_imports_the_device_folder_only_in_the_export_command():
    modules = _modules()
    found = {}
    for name, path in modules.items():
        if name.startswith("keras_vae.export"):
            continue
        skip = EXPORT_COMMAND.get(name, ())
        into = {m for m in _imports(path, name, modules, skip) if m.startswith("keras_vae.export")}
        if name == "keras_vae":  # the facade names the subpackage, and nothing inside it
            into.discard("keras_vae.export")
        if into:
            found[name] = sorted(into)
    assert not found, f"library modules importing keras_vae.export: {found}"
    # The check reads the CLI: the export command itself does import the exporters.
    cli = modules["keras_vae.cli"]
    assert "keras_vae.export" in _imports(cli, "keras_vae.cli", modules)


def test_the_check_finds_a_late_import_of_the_device_folder(tmp_path):
    lib = tmp_path / "lib.py"
    lib.write_text("def cmd_export():\n    from keras_vae.export import exporter\n"
                   "def serve():\n    from keras_vae.export import reader\n")
    modules = {"keras_vae.lib": lib, "keras_vae.export.exporter": lib,
               "keras_vae.export.reader": lib}
    assert _imports(lib, "keras_vae.lib", modules, skip={"cmd_export"}) == {
        "keras_vae.export.reader"}
    assert _imports(lib, "keras_vae.lib", modules, skip={"cmd_export", "serve"}) == set()


def test_the_shared_leaf_imports_only_numpy_and_the_standard_library():
    path = PACKAGES["keras_vae"] / "recipes.py"
    top = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, "recipes.py imports nothing relative"
            top.add(node.module.split(".")[0])
    assert "numpy" in top  # imports are read
    assert top <= set(sys.stdlib_module_names) | {"numpy"}, top - set(sys.stdlib_module_names)


def test_the_device_folder_holds_the_librarys_own_recipes():
    """export/recipes.py is a link to keras_vae/recipes.py: one file, two import paths."""
    linked, own = PACKAGES["keras_vae.export"] / "recipes.py", PACKAGES["keras_vae"] / "recipes.py"
    if linked.is_symlink():
        assert linked.resolve() == own.resolve()
    assert linked.read_bytes() == own.read_bytes()


def test_every_module_the_docs_use_is_an_attribute_after_import_keras_vae():
    import keras_vae

    for name in ("training", "parts.distribute", "data", "evaluation", "uses.latent",
                 "uses.anomaly", "saving", "files", "recipes", "parts.priors", "parts.posterior",
                 "parts.likelihoods", "parts.networks", "export", "parts.objectives",
                 "uses.pictures", "training.callbacks", "uses.corruption", "uses.augmentation"):
        attribute = keras_vae
        for part in name.split("."):
            attribute = getattr(attribute, part)
        assert importlib.import_module(f"keras_vae.{name}") is attribute
    assert callable(keras_vae.training.run) and callable(keras_vae.parts.distribute.get)
    assert callable(keras_vae.export.export) and callable(keras_vae.export.export_onnx)


def test_every_registry_registers_and_lists_valid_names_on_a_miss():
    import keras_vae
    from keras_vae.registry import Registry

    registries = [keras_vae.parts.networks.ARCHITECTURES, keras_vae.parts.likelihoods.LIKELIHOODS,
                  keras_vae.parts.priors.PRIORS, keras_vae.parts.posterior.POSTERIORS,
                  keras_vae.data.NAMED_SOURCES, keras_vae.parts.distribute.STRATEGIES,
                  keras_vae.parts.objectives.SCHEDULES, keras_vae.uses.anomaly.SCORES,
                  keras_vae.uses.latent.INTERPOLATIONS, keras_vae.uses.corruption.CORRUPTIONS,
                  keras_vae.export.FORMATS]
    for registry in registries:
        assert isinstance(registry, Registry)
        with pytest.raises(ValueError, match="valid names: \\[") as err:
            registry.get("no-such-name")
        assert sorted(registry)[0] in str(err.value)
    table = Registry("widget", {"a": 1})
    table.register("b", 2)
    assert table.get("b") == 2
    with pytest.raises(ValueError, match="already registered"):
        table.register("a", 3)

    @table.register("c")
    def c():
        return 3

    assert table.get("c") is c
