"""The import arrows point one way: estimators -> training -> engine -> transforms."""

import ast
from pathlib import Path

import sklearn_meta

PACKAGE = Path(sklearn_meta.__file__).parent

# Each module's layer; a module may import only from its own layer or lower ones.
LAYERS = {
    "optim": 0,
    "exceptions": 0,
    "_version": 0,
    "_warnings": 0,
    "_engine": 1,
    "_heads": 1,
    "_tasks": 1,
    "_network": 1,
    "_splitting": 1,
    "_callbacks": 2,
    "_training": 2,
    "_persistence": 2,
    "_samplers": 3,
    "_docstrings": 3,
    "_adaptation": 3,
    "_base": 4,
    "_regressor": 5,
    "_classifier": 5,
    "adaptation": 6,
    "inspection": 6,
    "datasets": 6,
    "__init__": 7,
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            yield (node.module or "").split(".")[0] or node.names[0].name


def test_every_module_has_a_layer():
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(LAYERS)


def test_imports_point_down_the_layers():
    upward = [
        f"{path.stem} -> {target}"
        for path in PACKAGE.glob("*.py")
        for target in _imports(path)
        if LAYERS[target] > LAYERS[path.stem]
    ]
    assert upward == []


def test_the_engine_and_the_transforms_know_nothing_of_scikit_learn():
    for name in ("optim", "_engine", "_training"):
        imported = {
            alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0)
            for alias in node.names
        }
        assert "sklearn" not in imported, name
