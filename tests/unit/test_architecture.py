"""The shape of the code, checked on every run: no import circle in leaderboard/ or runner/, every
module over 450 lines says in its docstring why it is one piece, and docs/architecture.md names
every module (and none that is gone).

They read the source with ``ast``; nothing is imported, so the checks take well under a second.
"""
from __future__ import annotations

import ast
import re
from collections import deque
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("leaderboard", "runner")
LONG_MODULE_LINES = 450
ONE_PIECE = "one piece"  # the phrase a long module's docstring uses to say why it is not split


def project_modules() -> dict[str, Path]:
    """Every module of the two packages, migrations included, by dotted name (a package by its
    own name, for its ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The project modules that ``name`` imports, each with the line of its first import.

    Every import statement counts wherever it stands: at module level, inside a function (a
    deferred import that breaks a circle at run time still ties the two modules together), and
    under ``if TYPE_CHECKING``. ``from package import name`` is an import of the submodule when
    ``name`` is one, else of the package. The parent packages that Python imports on the way
    (their ``__init__.py``) are not counted: a module never chooses them.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        for target in targets:
            if target in known and target != name:
                found[target] = min(found.get(target, node.lineno), node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    known = project_modules()
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module: each holds at least one import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: a deep chain of imports must not hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def shortest_circle(graph: dict[str, dict[str, int]], members: list[str]) -> list[str]:
    """The shortest circle through the first member, within its component: [a, b, ..., a]."""
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target in inside and target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no circle through {start}")  # a component always has one


def describe(graph: dict[str, dict[str, int]], circle: list[str]) -> str:
    modules = project_modules()
    steps = [f"{a} imports {b} ({modules[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in pairwise(circle)]
    return "\n  ".join(steps)


def test_no_module_in_leaderboard_or_runner_imports_itself_back_through_others():
    graph = import_graph()
    circles = [shortest_circle(graph, members) for members in strongly_connected(graph)]
    assert not circles, "import circles (give the shared part its own module, or move the caller):\n  " + \
        "\n\n  ".join(describe(graph, circle) for circle in circles)


def test_the_circle_finder_sees_an_import_inside_a_function_and_a_relative_one(tmp_path):
    (tmp_path / "a.py").write_text("def later():\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("from . import c\n")
    (tmp_path / "c.py").write_text("import pkg.a\n")
    (tmp_path / "d.py").write_text("from pkg.a import later\n")
    known = {f"pkg.{stem}": tmp_path / f"{stem}.py" for stem in "abcd"}
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    assert graph == {"pkg.a": {"pkg.b": 2}, "pkg.b": {"pkg.c": 1}, "pkg.c": {"pkg.a": 1}, "pkg.d": {"pkg.a": 1}}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert shortest_circle(graph, ["pkg.a", "pkg.b", "pkg.c"]) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_every_module_over_450_lines_says_in_its_docstring_why_it_is_one_piece():
    offenders = []
    for name, path in project_modules().items():
        if ".migrations." in f".{name}.":
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n") + (not source.endswith("\n"))
        if lines <= LONG_MODULE_LINES:
            continue
        docstring = " ".join((ast.get_docstring(ast.parse(source)) or "").split())
        if ONE_PIECE not in docstring.lower():
            offenders.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not offenders, (
        f"modules over {LONG_MODULE_LINES} lines whose docstring has no sentence saying why they are "
        f"{ONE_PIECE!r} (split them by concern, or say why not):\n  " + "\n  ".join(offenders))


def test_docs_architecture_names_every_module_and_none_that_is_gone():
    """Every module of leaderboard/ and runner/ but migrations and empty ``__init__.py`` files,
    each named by its path in backquotes (`runner/spec.py`)."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = [path.relative_to(ROOT).as_posix() for name, path in project_modules().items()
             if ".migrations." not in f".{name}." and path.read_text(encoding="utf-8").strip()]
    unnamed = [path for path in paths if f"`{path}`" not in doc]
    gone = sorted({path for path in re.findall(r"`((?:leaderboard|runner)/[\w/]+\.py)`", doc)
                   if not (ROOT / path).is_file()})
    assert not unnamed, "docs/architecture.md does not name (one line each, in its module list):\n  " + \
        "\n  ".join(unnamed)
    assert not gone, "docs/architecture.md names modules that no longer exist:\n  " + "\n  ".join(gone)
