"""The layout is the architecture: these tests keep its boundaries from eroding.

- The worker side (``corral._worker``) never imports the coordinator (engine, pool,
  scheduler, reports, backends) or rich: checked statically over every import a worker module
  can run, and in real worker processes (``sys.modules`` inside a task).
- The scheduler and state modules do no I/O: they import nothing that can touch a file, a
  socket, a process or the clock's side effects, and call no ``open``/``print``.
- No import cycles among corral's modules (imports under ``if TYPE_CHECKING:`` do not run and
  are not counted; imports inside functions run and are).

This module imports only ``corral`` (whose names load on first use) and the standard library,
so that a worker unpickling a task function defined here loads nothing from corral by it.
"""

from __future__ import annotations

import ast
import os
import pathlib
import sys

import pytest

import corral

SRC = pathlib.Path(corral.__file__).parent

WORKER_SIDE = "corral._worker"
SHARED_VOCABULARY = {
    # What both sides of a worker's pipe speak: the worker may import these, and only these.
    "corral",
    "corral._codec",
    "corral._errors",
    "corral._fixtures",
    "corral._messages",
    "corral._outcome",
    "corral._platform",
    "corral._proctitle",
    "corral._public",
    "corral._reasons",
    "corral._record",
    "corral._status",
}
# Imported by a task that asks for them (a share attached, a Service started), never by the
# worker loop itself: allowed in a worker, but not as a dependency of the worker side.
ON_DEMAND = ("corral._sharing", "corral._services", "corral._lifecycle")

STATE_MODULES = ("corral._scheduler", "corral._positions", "corral._deadlines", "corral._slots")
PURE_STDLIB = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "functools",
    "heapq",
    "itertools",
    "math",
    "typing",
}
IO_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def _module_name(path: pathlib.Path) -> str:
    parts = ("corral", *path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at any depth, except under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]))
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(corral modules, other top-level modules) that ``module`` can import when it runs."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            ours |= submodules or {target}
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None
            if node.module.split(".")[0] == "corral":
                ours.add(node.module)
            else:
                theirs.add(node.module)
        else:
            for alias in node.names:
                if alias.name.split(".")[0] == "corral":
                    ours.add(alias.name)
                else:
                    theirs.add(alias.name)
    assert ours <= MODULES.keys(), f"{module} imports unknown modules {ours - MODULES.keys()}"
    return ours, theirs


GRAPH = {module: _imports(module)[0] for module in MODULES}


def _with_parents(module: str) -> set[str]:
    """``module`` and the packages Python imports before it."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _closure(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in GRAPH[todo.pop()]:
            for module in _with_parents(dep) - seen:
                seen.add(module)
                todo.append(module)
    return seen


# -- the worker side -------------------------------------------------------------------------


def test_worker_side_imports_only_the_shared_vocabulary() -> None:
    worker_modules = [m for m in MODULES if m == WORKER_SIDE or m.startswith(WORKER_SIDE + ".")]
    assert len(worker_modules) >= 5
    for module in worker_modules:
        reached = _closure(module)
        foreign = {
            m for m in reached if m not in SHARED_VOCABULARY and not m.startswith(WORKER_SIDE)
        }
        assert not foreign, f"{module} reaches coordinator modules: {sorted(foreign)}"
        _, third_party = _imports(module)
        assert not {m for m in third_party if m.split(".")[0] == "rich"}, module


def _loaded_here(_: int) -> tuple[list[str], bool, int]:
    """Run as a task: what this worker process has imported."""
    return (
        sorted(m for m in sys.modules if m == "corral" or m.startswith("corral.")),
        any(m == "rich" or m.startswith("rich.") for m in sys.modules),
        os.getpid(),
    )


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_real_worker_loads_no_coordinator_module(start_method: str) -> None:
    # fork would inherit this (coordinator) process's modules, proving nothing: forkserver
    # and spawn workers start from a fresh interpreter, as on macOS.
    with corral.Pool(2, start_method=start_method) as pool:
        loaded, has_rich, pid = pool.map(_loaded_here, [0])[0]
    assert pid != os.getpid()
    allowed = SHARED_VOCABULARY | {m for m in MODULES if m.startswith(WORKER_SIDE)}
    assert set(loaded) <= allowed, sorted(set(loaded) - allowed)
    assert "corral._worker.loop" in loaded  # it did look at a real worker
    assert not has_rich


# -- the scheduler and state modules ---------------------------------------------------------


@pytest.mark.parametrize("module", STATE_MODULES)
def test_state_modules_do_no_io(module: str) -> None:
    pure = {*STATE_MODULES, "corral._outcome", "corral._status", "corral._record", "corral._public"}
    pure.add("corral")
    reached = _closure(module)
    assert reached <= pure, f"{module} reaches {sorted(reached - pure)}"
    for name in sorted((reached | {module}) - {"corral"}):
        _, third_party = _imports(name)
        io = {m for m in third_party if m not in PURE_STDLIB}
        assert not io, f"{name} (reached from {module}) imports {sorted(io)}"
        calls = {
            node.func.id
            for node in ast.walk(ast.parse(MODULES[name].read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not calls & IO_CALLS, f"{name} calls {sorted(calls & IO_CALLS)}"


# -- cycles ----------------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for dep in GRAPH[module]:
            if dep not in index:
                connect(dep)
                low[module] = min(low[module], low[dep])
            elif dep in on_stack:
                low[module] = min(low[module], index[dep])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1 or module in GRAPH[module]:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            connect(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_sees_function_level_imports() -> None:
    # The check above would pass vacuously if deferred imports were missed: _backends loads
    # its built-in backends inside functions.
    assert "corral._backends.process" in GRAPH["corral._backends"]
