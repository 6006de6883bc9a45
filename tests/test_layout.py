"""The package's shape: no import cycles (lazy imports inside functions included), and the library
imports nothing from the command layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Package → folder, as pyproject.toml maps them.
PACKAGES = {"zsris_rt": ROOT / "runtime", "zsris_rt.export": ROOT / "export"}
# Compiled modules (cpp_ext/): leaves of the graph, importing nothing of the project.
EXTENSIONS = ("zsris_rt._maskops",)


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if not any(name.startswith(other + ".") or name == other
                       for other in PACKAGES if other != package and other.startswith(package)):
                found[name] = path
    return found


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines under `if TYPE_CHECKING:`: annotations only, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `name` imports at run time, wherever the import statement sits."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.add(sub if sub in modules else source)
    resolved = set()
    for target in targets:
        while target and target not in modules:  # `import a.b.c` of a module a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, path, modules | dict.fromkeys(EXTENSIONS, path))
             for name, path in modules.items()}
    return graph | {name: set() for name in EXTENSIONS}


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "zsris_rt.maskops.crops" in graph["zsris_rt.maskops"]  # `from . import crops as _`
    assert "zsris_rt.bilinear" in graph["zsris_rt.maskops.crops"]  # `from ..bilinear import`
    assert "zsris_rt._maskops" in graph["zsris_rt.maskops"]  # `from .. import _maskops`
    assert "zsris_rt.segment" not in graph  # only real modules
    assert "zsris_rt.commands.segment" in graph["zsris_rt.commands.main"]  # inside main()
    assert "zsris_rt.export.clip_pack" in graph["zsris_rt.export.cli"]  # inside a runner
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(import_graph()) == []


def entry_points() -> set[str]:
    """The modules of pyproject.toml's console scripts: commands, wherever they live."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {target.split(":")[0] for target in scripts.values()}


def test_the_library_never_imports_the_commands() -> None:
    graph = import_graph()
    assert entry_points() >= {"zsris_rt.commands.main", "zsris_rt.export.cli"}
    library = [name for name in graph if name.startswith("zsris_rt.")
               and not name.startswith(("zsris_rt.commands", "zsris_rt.export"))
               and name not in entry_points()]
    offenders = {name: sorted(t for t in graph[name] if t.startswith("zsris_rt.commands"))
                 for name in library}
    assert {name: found for name, found in offenders.items() if found} == {}
