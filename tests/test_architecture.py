"""The layout is the architecture: each subpackage imports only what its docstring allows.

Read from the source (every import statement, including those inside functions and under
TYPE_CHECKING), so a new module or a stray import fails here, not in a review.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "horizond"

# What each part may import from horizond. "base" is the top-level helper modules.
BASE = {"horizond", "horizond.sysutil", "horizond.signals", "horizond.appload", "horizond.configfile",
        "horizond.jobs"}
ALLOWED = {
    "core": {"core"},
    "base": {"core", "base"},
    "connection": {"core", "base", "connection"},
    "observe": {"core", "base", "connection", "observe"},
    "worker": {"core", "base", "connection", "observe", "worker"},
    "control": {"core", "base", "connection", "observe", "control"},
    "web": {"core", "base", "connection", "observe", "control", "fleet", "web"},
    "fleet": {"core", "base", "connection", "observe", "control", "fleet"},
    "supervise": {"core", "base", "connection", "observe", "worker", "control", "fleet", "supervise"},
    "entry": {"core", "base", "connection", "observe", "worker", "control", "fleet", "supervise", "web", "entry"},
}
ENTRY = {"horizond.cli", "horizond.__main__", "horizond.demo"}
# The pure core decides; it does no I/O, so none of these may appear in it.
IMPURE = {"os", "socket", "subprocess", "psutil", "rq", "redis", "selectors", "select", "signal", "threading",
          "time", "sdnotify", "pathlib", "shutil"}
# Building a redis-py ConnectionPool from a URL parses it without connecting: the config check
# finds at load time what redis-py would refuse at run time.
PURE_EXCEPTIONS = {("horizond.core.config", "redis")}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _part(module: str) -> str:
    if module in ENTRY:
        return "entry"
    if module in BASE:
        return "base"
    return module.split(".")[1]


def _imports(module: str, path: pathlib.Path) -> set[str]:
    """Every module name imported, resolved to absolute dotted names."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def _internal(names: set[str], modules: dict[str, pathlib.Path]) -> set[str]:
    """The horizond modules among the imported names (a package import counts as its __init__)."""
    return {n for n in names if n in modules}


def test_every_module_sits_in_a_known_part():
    parts = {_part(m) for m in _modules()}
    assert parts <= set(ALLOWED), f"modules outside the layout: {parts - set(ALLOWED)}"


def test_each_part_imports_only_what_it_may():
    modules = _modules()
    wrong = []
    for module, path in sorted(modules.items()):
        mine = _part(module)
        for used in sorted(_internal(_imports(module, path), modules)):
            if _part(used) not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {used} ({_part(used)})")
    assert not wrong, "import rules broken:\n  " + "\n  ".join(wrong)


def test_the_core_does_no_io():
    wrong = []
    for module, path in sorted(_modules().items()):
        if _part(module) != "core":
            continue
        for name in sorted(_imports(module, path)):
            top = name.split(".")[0]
            if top in IMPURE and (module, top) not in PURE_EXCEPTIONS:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "the core must stay pure:\n  " + "\n  ".join(wrong)


def test_no_import_cycles():
    modules = _modules()
    graph = {m: {u for u in _internal(_imports(m, p), modules) if u != m and not m.startswith(u + ".")}
             for m, p in modules.items()}
    # a package's __init__ is imported with any of its modules: ignore edges into bare packages
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    graph = {m: {u for u in used if u not in packages} for m, used in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_each_subpackage_says_what_it_owns_and_may_import():
    for part in ALLOWED:
        init = PACKAGE / part / "__init__.py"
        if part in ("base", "entry"):
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, f"{init} must open with what it owns and what it may import"


def test_the_readme_layout_names_every_module():
    """README's Layout table is where a newcomer starts: a module it does not name is one they miss."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set()
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    for cell in table.split("`"):
        for part in cell.split(","):
            if part.strip().endswith(".py"):
                named.add(part.strip())
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert not files - named, f"README's Layout does not name: {sorted(files - named)}"
    assert not named - files, f"README's Layout names modules that do not exist: {sorted(named - files)}"
