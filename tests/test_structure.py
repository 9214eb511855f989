"""The package's structure: imports flow one way; private APIs of other packages only where listed, with why."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

from support import REPO, env

#: Folder -> the import name its modules have (setup.cfg's package_dir).
PACKAGES = {"keras_vit": "keras_vit", "training": "keras_vit.training", "serving": "keras_vit.serving"}
#: What reaches into another package's private code: the pattern that finds it in our source.
PRIVATE_PATTERNS = {
    "keras.src": r"\bkeras\.src\b|saving_lib\._\w+",
    "a Keras trainer's methods replaced": r"\bmodel\.(_\w+|make_train_function)\s*=",
    "tensorflow.python": r"\btensorflow\.python\b",
    "uvicorn's protocol classes": r"\buvicorn\.(protocols|lifespan|loops|supervisors)\b",
}

#: Every use of a private API, with why no public one does and the upstream thread; the distribution each lives in
#: must have an upper version bound in setup.cfg (the versions the use was checked against).
PRIVATE_USES = {
    ("keras_vit/weights/keras_saving.py", "keras.src"): (
        "keras", "the names a .weights.h5 file gives each variable come from Keras' saving traversal alone",
        "keras-team/keras#21404"),
    ("training/distribute.py", "a Keras trainer's methods replaced"): (
        "keras", "model.fit under MultiWorkerMirroredStrategy fails in Keras 3's TensorFlow trainer",
        "keras-team/keras#20585"),
    ("serving/tflite.py", "tensorflow.python"): (
        "tensorflow", "TensorFlow 2 has no public call that freezes a concrete function's variables to constants",
        "tensorflow/tensorflow#48639"),
    ("serving/connections.py", "uvicorn's protocol classes"): (
        "uvicorn", "uvicorn has no deadline for a request's head or body (slowloris); its H11Protocol is subclassed",
        "Kludex/uvicorn#157"),
}


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports, at any depth of its code (lazy imports in functions count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {module for module in found if module in known and module != name}


def test_the_import_graph_has_no_circle():
    known = modules()
    graph = {name: imports(path, name, set(known)) for name, path in known.items()}
    # Depth-first search for a back edge; report the circle it closes.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            assert circle is None, "import circle: " + " -> ".join(circle)


#: Rooms whose modules must not import the rooms above them (imports flow one way): (room, above, allowed).
#: The library's analysis command reads the training application's datasets; the weights read the variant table
#: (names and architectures, no model class).
LAYERS = [
    ("keras_vit", ("keras_vit.training", "keras_vit.serving"), {"keras_vit.analysis.__main__"}),
    ("keras_vit.weights", ("keras_vit.models", "keras_vit.analysis"), {"keras_vit.models.variants"}),
    ("keras_vit.layers", ("keras_vit.models", "keras_vit.weights", "keras_vit.analysis"), set()),
]


def test_the_library_never_imports_its_applications_nor_weights_the_models():
    known = modules()
    for room, above, allowed in LAYERS:
        for name, path in known.items():
            if name.startswith(room) and not name.startswith(("keras_vit.training", "keras_vit.serving")) \
                    and name not in allowed:
                upward = {m for m in imports(path, name, set(known)) if m.startswith(above) and m not in allowed}
                assert not upward, f"{name} imports {sorted(upward)}"


def test_no_function_of_the_library_is_over_80_lines():
    long = [f"{path.relative_to(REPO)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in (REPO / "keras_vit").rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert not long, long


def test_private_apis_only_where_listed_and_their_packages_bounded():
    found = {
        (str(path.relative_to(REPO)), name)
        for folder in PACKAGES
        for path in (REPO / folder).rglob("*.py")
        for name, pattern in PRIVATE_PATTERNS.items()
        if re.search(pattern, path.read_text())
    }
    assert found == set(PRIVATE_USES)
    requirements = (REPO / "setup.cfg").read_text()
    for distribution in {use[0] for use in PRIVATE_USES.values()}:
        assert re.search(rf"^\s+{distribution}>=[\d.]+,<[\d.]+$", requirements, re.M), f"{distribution} has no upper bound"


def test_only_the_command_lines_parse_flags():
    """The library takes a RunConfig: argparse is imported only by the modules that are commands."""
    entry_points = {"train.py", "evaluate.py", "fewshot.py", "study.py", "vtab.py", "__main__.py"}
    parsing = {
        path.name for path in (REPO / "training").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and "argparse" in ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module])
    }
    assert parsing <= entry_points, parsing - entry_points


def test_the_private_saving_traversal_still_names_every_weight_keras_writes(tmp_path):
    """Fails by name the day Keras changes the traversal `keras_vit.weights.keras_saving` relies on."""
    import h5py
    import keras

    import keras_vit
    from keras_vit.weights import keras_saving

    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=3,
                          position_embedding="learned_2d")
    model.save_weights(tmp_path / "model.weights.h5")
    written = {}
    with h5py.File(tmp_path / "model.weights.h5") as f:
        f.visititems(lambda name, item: written.update({name: item.shape}) if isinstance(item, h5py.Dataset) else None)
    slots = keras_saving.file_slots(model)
    recorded = {f"{group}/vars/{key}".lstrip("/"): tuple(value.shape) for (group, key), value in slots.items()
                if isinstance(value, keras.Variable)}
    assert recorded == {name: shape for name, shape in written.items() if not name.endswith("grid_size")}
    assert {id(v) for (_, _), v in slots.items() if isinstance(v, keras.Variable)} == {id(v) for v in model.weights}


#: Imports every module of training/ and serving/, then lists what keras_vit added to the import system.
EVERY_MODULE = """
import importlib, sys
finders = list(sys.meta_path)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(type(f).__module__ for f in sys.meta_path if f not in finders and type(f).__module__.startswith("keras_vit")))
print(sorted(name for name in sys.modules if name.split(".")[0] in ("training", "serving")))
"""


@pytest.mark.process
def test_every_module_has_one_name_and_no_finder_of_ours():
    names = sorted(name for name in modules() if name.startswith(("keras_vit.training", "keras_vit.serving")))
    result = subprocess.run([sys.executable, "-c", EVERY_MODULE, *names], cwd=REPO, env=env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-2:] == ["[]", "[]"]
    assert len(names) > 30
    sources = [path for folder in PACKAGES for path in (REPO / folder).rglob("*.py")]
    assert not [str(path) for path in sources if "meta_path" in path.read_text()]
