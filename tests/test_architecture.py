"""The import contract between the packages, checked by parsing the source with `ast`.

The rules:

1. `model/` is pure PyTorch: it never imports Qt (PySide6, shiboken6), sounddevice, soundfile,
   or `app`.
2. `app/ui/` never touches the model: it never imports `torch` or `model`, except the torch-free
   facts of `model.files`, `model.config`, `model.catalog` and `model.voices`; the engine thread
   owns the model and sends the GUI plain Python values.
3. Qt lives only in `app/ui/`: no other file under `app/` imports PySide6 or shiboken6, except the
   `app/gui*.py` launcher that opens the window.
4. No import cycles inside `app/` or `model/`, counting imports inside functions too (only those
   under `if TYPE_CHECKING:` are left out): a module and what it imports form a tree.

Only direct imports are checked (``import x``, ``from x import y``, relative imports resolved to
their absolute name, and ``importlib.import_module("x")`` / ``__import__("x")`` with a literal
name); nothing is imported to check it. A folder that does not exist yet has nothing to check,
and the self-checks below show that the checker does catch each kind of forbidden import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

QT = frozenset({"PySide6", "shiboken6"})


@dataclass(frozen=True)
class Rule:
    name: str
    folder: str  # relative to the repository root
    forbidden: frozenset[str]  # top-level module names
    exempt: tuple[str, ...] = ()  # glob patterns, relative to the repository root
    allowed: frozenset[str] = frozenset()  # modules allowed although their package is forbidden

    def files(self, root: Path) -> list[Path]:
        folder = root / self.folder
        if not folder.is_dir():
            return []
        exempt = {p for pattern in self.exempt for p in root.glob(pattern)}
        return sorted(p for p in folder.rglob("*.py") if not (exempt & {p, *p.parents}))


RULES = (
    Rule("model/ is pure PyTorch", "model", QT | {"sounddevice", "soundfile", "app"}),
    Rule(
        "app/ui/ never touches the model",
        "app/ui",
        frozenset({"torch", "model"}),
        allowed=frozenset({"model.files", "model.config", "model.catalog", "model.voices"}),
    ),
    Rule("Qt lives only in app/ui/", "app", QT, exempt=("app/ui", "app/gui*.py")),
)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of the modules that `source` (the code of `module`) imports directly."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = ".".join(p for p in (parent, node.module) if p)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            if node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
    return names


def module_name(path: str) -> tuple[str, bool]:
    """The dotted module name of the file at `path` (relative to the root), and whether it is a
    package's __init__."""
    parts = Path(path).with_suffix("").parts
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _without_type_checking(tree: ast.Module) -> ast.Module:
    """`tree` less its `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    for node in ast.walk(tree):
        for field_name in ("body", "orelse"):
            body = getattr(node, field_name, None)
            if isinstance(body, list):
                setattr(node, field_name, [n for n in body if not _is_type_checking(n)])
    return tree


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path, packages: tuple[str, ...] = ("app", "model")) -> dict[str, set[str]]:
    """Each module of `packages` -> the modules of `packages` it imports (at any depth of its
    code, less `if TYPE_CHECKING:` blocks). `from x import y` counts as importing x.y where x.y
    is a module, else x."""
    files = {
        module_name(p.relative_to(root).as_posix()): p
        for top in packages
        for p in (root / top).rglob("*.py")
    }
    modules = {name for name, _ in files}
    graph: dict[str, set[str]] = {}
    for (name, is_package), path in files.items():
        tree = _without_type_checking(ast.parse(path.read_text(encoding="utf-8")))
        imported = imported_modules(ast.unparse(tree), name, is_package)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a list of modules, the first repeated at the end) for each strongly
    connected group of more than one module."""
    found, stack, on_stack, index, low = [], [], set(), {}, {}

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group) + [sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph(ROOT)) == [], "modules that import each other, directly or not"


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    files = {
        "app/__init__.py": "",
        "app/a.py": "def f():\n    from .b import g\n",
        "app/b.py": "from app import c\n",
        "app/c.py": "import app.a\n",
        "app/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
        "model/__init__.py": "",
    }
    write_tree(tmp_path, files)
    assert cycles(import_graph(tmp_path)) == [["app.a", "app.b", "app.c", "app.a"]]


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(
    source: str, path: str, forbidden: frozenset[str], allowed: frozenset[str] = frozenset()
) -> list[str]:
    """``"<path>: imports <module>"`` for each import in `source` (at `path`) that is forbidden."""
    module, is_package = module_name(path)
    bad = {
        m
        for m in imported_modules(source, module, is_package)
        if m.split(".")[0] in forbidden
        and not any(m == a or m.startswith(a + ".") for a in allowed)
    }
    # `from x.y import z` yields both x.y and x.y.z: name only the shortest.
    shortest = {m for m in bad if not any(m.startswith(b + ".") for b in bad)}
    return sorted(f"{path}: imports {m}" for m in shortest)


def check_tree(root: Path, rule: Rule) -> list[str]:
    problems: list[str] = []
    for file in rule.files(root):
        rel = file.relative_to(root).as_posix()
        problems += violations(file.read_text(encoding="utf-8"), rel, rule.forbidden, rule.allowed)
    return problems


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_import_contract(rule: Rule) -> None:
    assert check_tree(ROOT, rule) == [], f"broken rule: {rule.name} (see {__name__} docstring)"


def test_the_rules_see_this_checkout() -> None:
    # Guards against a rule that silently checks nothing because its folder moved.
    assert ROOT / "app" / "cli.py" in RULES[2].files(ROOT)
    assert len(import_graph(ROOT)) > 50


# Self-checks: the checker catches what the rules forbid, on synthetic sources and on a tree.

MODEL, UI, APP = RULES


@pytest.mark.parametrize(
    ("source", "path", "rule"),
    [
        ("import torch", "app/ui/main_window.py", UI),
        ("import torch.nn.functional as F", "app/ui/waveform.py", UI),
        ("from model.pipeline import Pipeline", "app/ui/main_window.py", UI),
        ("from model.files_extra import x", "app/ui/main_window.py", UI),
        ("import model.lm as lm", "app/ui/widgets/__init__.py", UI),
        ("import importlib\nimportlib.import_module('torch')", "app/ui/lazy.py", UI),
        ("def f():\n    from PySide6.QtCore import QObject", "model/lm.py", MODEL),
        ("import sounddevice as sd", "model/mimi.py", MODEL),
        ("from app.errors import UserError", "model/checkpoint.py", MODEL),
        ("from PySide6 import QtCore", "app/engine.py", APP),
        ("import shiboken6", "app/settings.py", APP),
    ],
)
def test_checker_catches_forbidden_imports(source: str, path: str, rule: Rule) -> None:
    assert len(violations(source, path, rule.forbidden, rule.allowed)) == 1


@pytest.mark.parametrize(
    ("source", "path", "rule"),
    [
        ("import torch\nfrom model.lm import LM", "app/engine.py", APP),
        ("from PySide6.QtWidgets import QLabel", "app/ui/main_window.py", UI),
        ("from app.engine import Event\nimport numpy", "app/ui/main_window.py", UI),
        ("from model.catalog import CATALOG\nimport model.config", "app/ui/settings.py", UI),
        ("import torchaudio_like\nimport models", "app/ui/view.py", UI),
        ("from .. import engine", "app/ui/main_window.py", UI),  # app.engine
        ("from ... import model", "app/ui/widgets/__init__.py", UI),  # app.model
        ("from .conv import Conv\nimport torch", "model/mimi.py", MODEL),
        ("from .. import app", "model/sub/__init__.py", MODEL),  # model.app, not app
    ],
)
def test_checker_allows_what_the_rules_allow(source: str, path: str, rule: Rule) -> None:
    assert violations(source, path, rule.forbidden, rule.allowed) == []


def test_checker_finds_a_forbidden_import_in_a_tree(tmp_path: Path) -> None:
    files = {
        "app/ui/view.py": "import torch\n",
        "app/ui/ok.py": "from PySide6.QtWidgets import QLabel\n",
        "app/gui.py": "from PySide6.QtWidgets import QApplication\n",
        "app/engine.py": "from PySide6.QtCore import Signal\n",
        "model/lm.py": "import soundfile\n",
        "model/ok.py": "import torch\n",
    }
    write_tree(tmp_path, files)
    assert [check_tree(tmp_path, rule) for rule in RULES] == [
        ["model/lm.py: imports soundfile"],
        ["app/ui/view.py: imports torch"],
        ["app/engine.py: imports PySide6.QtCore"],
    ]


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(source)
