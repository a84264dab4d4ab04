"""The package's architecture, checked with ``ast`` (no import of the package itself):

- folders are layers, bottom to top; a module imports only its own layer or those below it
  (``base`` <- ``config`` <- ``data`` <- ``build`` <- ``runtime`` <- ``sweep`` <- ``cli``/``bench``);
- no import cycle among modules, counting imports inside functions too (``TYPE_CHECKING`` blocks
  are annotations, not imports, and are left out);
- no module over 400 lines; the top level holds only the package's face and its entry point.

``__main__`` modules are entry points (``python -m olmo_exp.data``): they sit above every layer.
A few commands are packages of their own (``python -m olmo_exp.export``): such a folder holds only
its ``__init__`` and ``__main__``, the code being in ``cli/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "olmo_exp"
LAYERS = ("base", "config", "data", "build", "runtime", "sweep", "cli", "bench")
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK["cli"] = RANK["bench"]  # side by side at the top; neither imports the other
TOP_LEVEL = {"__init__.py", "__main__.py"}
# `python -m olmo_exp.NAME` commands: a folder with only __init__.py and __main__.py (no layer).
ENTRY_POINTS = ("export", "evaluate", "generate")
MAX_LINES = 400


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` names, relative ones (``from .x``, ``from ..x``)
    resolved against the importing module's package."""
    if node.level == 0:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(path: Path, known: set[str], root: Path = PACKAGE) -> set[str]:
    """The package's own modules that ``path`` imports, anywhere in the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from olmo_exp.x import y`: y may be a module of x, else a name defined in x.
            module = _absolute(node, package)
            names = [f"{module}.{a.name}" if f"{module}.{a.name}" in known
                     else module for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("olmo_exp"):
                found.add(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        # A package's __init__ is imported with each of its modules: leave it out as a target.
        graph[name] = {m for m in imports_of(path, known, root)
                       if m != name and not _is_package(m, paths)}
    return graph


def _is_package(name: str, paths: dict[str, Path]) -> bool:
    return paths[name].name == "__init__.py"


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        layer = layer_of(module)
        if layer is None or module.endswith("__main__"):
            continue
        for target in targets:
            target_layer = layer_of(target)
            if target_layer is None:
                continue
            if RANK[target_layer] > RANK[layer] or (
                    RANK[target_layer] == RANK[layer] and target_layer != layer):
                bad.append(f"{module} ({layer}) imports {target} ({target_layer})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_down_the_layers() -> None:
    graph = import_graph()
    assert layer_violations(graph) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_module_belongs_to_a_layer_and_stays_short() -> None:
    top = {p.name for p in PACKAGE.iterdir() if p.suffix == ".py"}
    assert top == TOP_LEVEL
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS) | set(ENTRY_POINTS)
    for folder in ENTRY_POINTS:
        assert {p.name for p in (PACKAGE / folder).glob("*.py")} == TOP_LEVEL, folder
    for folder in folders:
        assert ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())), folder
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    assert not list(PACKAGE.rglob("utils.py"))


@pytest.mark.parametrize("source, expected", [
    # config importing runtime: upward
    ({"config/model.py": "from olmo_exp.runtime.launch import spawn\n",
      "runtime/launch.py": "def spawn(): ...\n"}, "violation"),
    # an import inside a function counts too
    ({"config/model.py": "def f():\n    from olmo_exp.sweep import report\n",
      "sweep/report.py": ""}, "violation"),
    # a cycle inside one layer
    ({"data/a.py": "from olmo_exp.data import b\n", "data/b.py": "import olmo_exp.data.a\n"},
     "cycle"),
    # relative imports are imports: upward, and a cycle
    ({"config/model.py": "from ..runtime.launch import spawn\n",
      "runtime/launch.py": "def spawn(): ...\n"}, "violation"),
    ({"data/a.py": "from . import b\n", "data/b.py": "from .a import x\n"}, "cycle"),
    # downward only, annotations under TYPE_CHECKING: fine
    ({"runtime/run.py": "from olmo_exp.config.model import M\n",
      "config/model.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from olmo_exp.runtime.run import R\nM = 1\n"}, "clean"),
])
def test_the_check_catches_what_it_names(tmp_path: Path, source: dict[str, str],
                                         expected: str) -> None:
    """The checker itself fails on an upward import and on a cycle (a broken tree, made here)."""
    root = tmp_path / "olmo_exp"
    for rel, text in {"__init__.py": "", **source}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    graph = import_graph(root)
    found = "violation" if layer_violations(graph) else "cycle" if cycles(graph) else "clean"
    assert found == expected


def module_map() -> tuple[Path, str]:
    """(the page, the text) of the "Where the code is" map (docs/development.md, or wherever
    the docs keep it)."""
    root = PACKAGE.parent
    for page in [*sorted((root / "docs").glob("*.md")), root / "README.md"]:
        parts = re.split(r"(?m)^#+ Where the code is\s*$", page.read_text() if page.exists() else "")
        if len(parts) > 1:
            return page, parts[1].split("```", 2)[1]
    raise AssertionError('no "Where the code is" map in docs/*.md or README.md')


def mapped_modules(block: str) -> dict[str, list[str]]:
    """Each layer's module names as the map lists them: ``layer/  name (what it is), name, a + b
    (what both are), name: what it is``. A name is what leads an entry (entries are separated by
    commas or ``+`` outside parentheses), never a word of the descriptions."""
    entries: dict[str, str] = {}
    layer = None
    for line in block.splitlines():
        head = re.match(r"^(\w+)/\s+(.*)$", line)
        if head:
            layer, line = head[1], head[2]
        if layer:
            entries[layer] = entries.get(layer, "") + " " + line.strip()
    named: dict[str, list[str]] = {}
    for layer, text in entries.items():
        depth, top = 0, ""
        for char in text:  # the text outside parentheses
            depth += (char == "(") - (char == ")")
            top += char if depth == 0 and char not in "()" else ""
        named[layer] = [part.split(":")[0].strip() for part in re.split(r"[,+]", top)]
    return named


def map_problems(named: list[str], modules: set[str]) -> list[str]:
    entries = set(named)
    return sorted([f"not a module name: {e!r}" for e in entries if not re.fullmatch(r"[a-z_]+", e)]
                  + [f"missing: {m}" for m in modules - entries]
                  + [f"gone: {e}" for e in entries - modules if re.fullmatch(r"[a-z_]+", e)])


def test_the_readmes_module_map_matches_the_tree() -> None:
    """The map names every module under its layer, and nothing that is gone."""
    page, block = module_map()
    named = mapped_modules(block)
    assert set(named) == set(LAYERS), page
    for name in LAYERS:
        modules = {p.stem for p in (PACKAGE / name).glob("*.py")} - {"__init__", "__main__"}
        assert map_problems(named[name], modules) == [], (page.name, name)


@pytest.mark.parametrize("block, problems", [
    # a module named only in another's description does not count
    ("base/     errors (ConfigError; see files)\n", ["missing: files"]),
    ("base/     errors (ConfigError), files (shipped files), and more\n",
     ["not a module name: 'and more'"]),
    ("base/     errors (ConfigError), files (shipped files), paths (gone)\n", ["gone: paths"]),
    ("base/     errors, files + locks (shipped files), hashes: sha256\n",
     ["gone: hashes", "gone: locks"]),
    ("base/     errors (ConfigError,\n          DataError), files (shipped)\n", []),
])
def test_the_map_check_reads_names_not_prose(block: str, problems: list[str]) -> None:
    assert map_problems(mapped_modules(block)["base"], {"errors", "files"}) == problems
