"""The layout's rules, read from the code: which subpackage may import which, what never imports
torch, Feast or Airflow, where MLflow's global state is set, and sizes (README, "Layout")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PACKAGE = Path(__file__).resolve().parents[2] / "recsys"
TOP = {
    "config",
    "config_base",
    "config_learning",
    "errors",
    "checks",
    "files",
    "home",
    "redaction",
}  # the top-level modules: anyone may import them
# subpackage -> the subpackages it may import (besides the top-level modules)
ALLOWED = {
    "data": set(),
    "evaluation": {"data"},
    "runtime": {"data"},
    "models": {"data", "evaluation", "runtime"},
    "ops": set(),
    "online": {"ops", "runtime"},
    "tracking": {"data", "evaluation", "models", "runtime", "ops"},
    "serving": {"runtime", "online", "ops"},
    "pipelines": {"data", "evaluation", "models", "runtime", "online", "tracking", "ops", "pipelines"},
    "cli": {"data", "online", "ops", "pipelines", "serving"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    return {
        ".".join(("recsys", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): (
            ast.parse(path.read_text(), str(path))
        )
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only: never imported at run time)."""
    guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    return {id(inner) for block in guarded for node in block.body for inner in ast.walk(node)}


def _imports(tree: ast.Module) -> set[str]:
    """Every module a file imports at run time, at the top or inside a function."""
    found = set()
    skip = _typing_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "recsys"}
    return found


def _part(module: str) -> str:
    """The subpackage (or top-level module) a recsys module belongs to."""
    return module.split(".")[1] if module.count(".") else module


def test_subpackages_import_only_downward():
    wrong = []
    for name, tree in _modules().items():
        if name == "recsys":
            continue
        mine = _part(name)
        for imported in _imports(tree):
            if not imported.startswith("recsys.") or _part(imported) in TOP | {mine}:
                continue
            if mine in TOP or _part(imported) not in ALLOWED[mine]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_every_subpackage_says_what_it_owns():
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.split()) >= 10, f"{init.relative_to(PACKAGE.parent)} needs a docstring"
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no module docstring"


def test_recsys_never_imports_airflow_and_only_models_and_tracking_import_torch():
    for name, tree in _modules().items():
        tops = {imported.split(".")[0] for imported in _imports(tree)}
        assert "airflow" not in tops, name
        if "torch" in tops:
            assert _part(name) in {"models", "tracking"}, f"{name} imports torch"
        if "feast" in tops:
            assert name == "recsys.online.feast_repo", f"{name} imports feast"


def test_the_lookup_path_and_the_runtime_load_neither_torch_nor_feast():
    """Imported for real, in a fresh interpreter: a module that pulls torch in through another counts."""
    code = (
        "import json, sys\n"
        "import recsys.cli, recsys.online.reader, recsys.runtime.scoring, recsys.runtime.similar\n"
        "import recsys.serving.models\n"
        "recsys.cli.build_parser()\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'feast', 'airflow'})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_mlflow_global_state_is_set_in_one_module_only():
    setters = {"set_tracking_uri", "set_registry_uri", "set_experiment"}
    found = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in setters:
                found.append(name)
    assert set(found) <= {"recsys.ops.registry"}, found


def _changes_process_state(node: ast.AST) -> bool:
    """An assignment to, or a mutating call on, os.environ, sys.path or sys.modules."""
    text = ast.unparse(node)
    return any(target in text for target in ("os.environ", "sys.path", "sys.modules", "os.putenv"))


def test_nothing_changes_the_environment_sys_path_or_sys_modules_at_import():
    found = []
    for name, tree in _modules().items():
        for node in tree.body:  # module level only: what runs at import
            if isinstance(node, ast.Assign | ast.AugAssign | ast.Expr) and _changes_process_state(node):
                found.append(f"{name}: {ast.unparse(node)}")
    assert not found, found


def test_modules_and_functions_stay_small():
    """recsys/ and the DAG files (a DAG body counts as one function)."""
    long_modules, long_functions = [], []
    for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "dags").glob("*.py")]:
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(PACKAGE.parent)} ({lines})")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({length})")
    assert not long_modules, long_modules
    assert not long_functions, long_functions
