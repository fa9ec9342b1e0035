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
    "modules": 0,
    "heads": 1,
    "engine": 2,
    "tasks": 3,
    "training": 3,
    "estimators": 4,
    "adaptation": 5,
    "inspection": 5,
    "datasets": 5,
    "__init__": 6,
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


def test_the_engine_training_and_transforms_know_nothing_of_scikit_learn():
    # The heads are parameter objects in scikit-learn's way (sklearn.base.BaseEstimator, its parameter
    # validation); nothing else of scikit-learn reaches below the estimators.
    files = [*_modules()["optim"], *_modules()["engine"], *_modules()["training"]]
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


def test_the_heads_take_only_the_parameter_object_machinery_of_scikit_learn():
    allowed = {"sklearn.base", "sklearn.utils._param_validation"}
    for path in _modules()["heads"]:
        imported = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("sklearn")
        }
        assert imported <= allowed, path
