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
    "_signals": 0,
    "modules": 0,
    "_engine": 1,
    "_recompute": 1,
    "_threads": 1,
    "_heads": 1,
    "_tasks": 1,
    "_network": 1,
    "_splitting": 1,
    "_callbacks": 2,
    "_training": 2,
    "_compiling": 2,
    "_distributed": 2,
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


def _modules() -> dict[str, list[Path]]:
    """Each top-level module of the package, and its files (a subpackage has several)."""
    modules = {p.stem: [p] for p in PACKAGE.glob("*.py")}
    for package in (p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        modules[package.name] = sorted(package.glob("*.py"))
    return modules


def _imports(path: Path):
    """The package's top-level modules that ``path`` imports (relative imports leaving its own folder)."""
    depth = len(path.relative_to(PACKAGE).parts)  # 1: a top-level module, 2: inside a subpackage
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == depth:
            yield (node.module or "").split(".")[0] or node.names[0].name


def test_every_module_has_a_layer():
    assert set(_modules()) == set(LAYERS)


def test_imports_point_down_the_layers():
    upward = [
        f"{module} -> {target}"
        for module, paths in _modules().items()
        for path in paths
        for target in _imports(path)
        if LAYERS[target] > LAYERS[module]
    ]
    assert upward == []


def test_the_engine_and_the_transforms_know_nothing_of_scikit_learn():
    files = [
        *_modules()["optim"],
        PACKAGE / "_engine.py",
        PACKAGE / "_training.py",
        PACKAGE / "_heads.py",
        PACKAGE / "_distributed.py",
    ]
    for name in files:
        imported = {
            alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(name.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0)
            for alias in node.names
        }
        assert "sklearn" not in imported, name


def _top_level_assignments(path: Path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                yield target.id


def test_no_module_binds_a_top_level_name_twice():
    # A second binding silently wins over the first (optim._BY_NAME was defined twice).
    twice = []
    for paths in _modules().values():
        for path in paths:
            names = list(_top_level_assignments(path))
            twice += [f"{path.relative_to(PACKAGE)}: {name}" for name in sorted(set(names)) if names.count(name) > 1]
    assert twice == []
