"""The import graph of sds_bench: no cycle, no import that runs up the layers, no function-level import that hides one.

Read from the source with `ast` (module-level and function-level imports alike), so a test fails on the arrow itself,
not on the "partially initialized module" error it causes only in some import orders.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sds_bench"

LAYERS = {
    "errors": 0, "files": 0, "record": 0, "hookspecs": 0,
    "plugin": 1, "sparsity": 1, "stats": 1, "registry": 1,
    "embedded": 1, "embedded.configs": 1, "embedded.corpus": 1,
    "models": 2, "data": 2,
    "passes": 3, "checks": 3,
    "pruners": 4, "eval": 4, "allocation": 4,
    "engine": 5,
    "api": 6, "": 6,
    "kernels": 7, "kernels.shapes": 7, "kernels.plan": 7, "kernels.gpu": 7, "kernels.timing": 7,
    "kernels.backends": 7, "kernels.linear": 7, "kernels.e2e": 7, "kernels.report": 7, "kernels.bench": 7,
    "embedded.build": 7,
    "runner": 8,
    "report": 9, "report.significance": 9,
    "cli": 10, "testing": 10,
}
"""Rank of each module (longest dotted prefix below sds_bench; "" is the package's public API); a module may import
its own rank or below. 0-1 are known to all: errors, reading user files, records, hook specs, the plugin types and registry, sparsity,
statistics, and what the embedded models and corpus are (configs, no training code). The layer-wise `passes` sit below
both the engine and the whole-model pruners (Týr); `allocation` (the dense pass an allocator reads) beside the
pruners, below the engine. kernels (the 2:4 benchmark) take model names and shapes, the runner
drives the engine and evaluators through `api`, report reads what the runner stored, embedded.build trains and
evaluates a model (a tool the CLI runs), and cli and the contract kit (testing) sit on top."""

LAZY = {
    "cli": "each command imports what it needs, so `sds-bench --help` starts fast",
    "pruners.tyr.structures": "modeling_tyr imports five transformers model classes; only Týr needs them",
}
"""Modules allowed function-level imports of sds_bench modules, with why (never to hide a cycle)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, bool, int]]:
    """(imported sds_bench module, inside a function?, line) for every import in module `name`."""
    found = []

    def target(module: str, alias: str | None) -> str:
        inner = module.removeprefix("sds_bench").lstrip(".")
        sub = f"{inner}.{alias}".lstrip(".") if alias else inner
        return sub if alias and sub in MODULES else inner

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"sds_bench.{name}:{child.lineno}: relative import"
                if child.module == "sds_bench" or child.module.startswith("sds_bench."):
                    found.extend((target(child.module, a.name), in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((target(a.name, None), in_function, child.lineno) for a in child.names
                             if a.name == "sds_bench" or a.name.startswith("sds_bench."))
            walk(child, nested)

    walk(ast.parse(MODULES[name].read_text()), False)
    return found


def rank(name: str) -> int:
    prefixes = [p for p in LAYERS if p == "" or name == p or name.startswith(p + ".")]
    assert name == "" or prefixes != [""], f"sds_bench.{name} has no place in LAYERS; add it"
    return LAYERS[max(prefixes, key=len)]


GRAPH = {name: imports(name) for name in MODULES}


def test_every_module_has_a_layer():
    for name in MODULES:
        rank(name)


def test_no_import_cycle():
    edges = {name: {t for t, _, _ in found if t != name} for name, found in GRAPH.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for t in sorted(edges.get(name, ())):
            if state.get(t) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_runs_up_the_layers(name):
    upward = [f"line {line}: {target or 'sds_bench'} (layer {rank(target)})" for target, _, line in GRAPH[name]
              if rank(target) > rank(name)]
    assert not upward, f"sds_bench.{name or '__init__'} (layer {rank(name)}) imports a higher layer: {upward}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_function_level_imports_only_where_listed(name):
    lazy = [f"line {line}: {target}" for target, inside, line in GRAPH[name] if inside]
    listed = any(name == m or name.startswith(m + ".") for m in LAZY)
    assert listed or not lazy, f"sds_bench.{name} imports inside a function ({lazy}); move it to the top or list it in LAZY with why"


def test_the_graph_is_read():
    """The parser sees both kinds of import (guards against a test that passes because it reads nothing)."""
    assert ("errors", False, 9) in GRAPH["cli"] and any(inside for _, inside, _ in GRAPH["cli"])
    assert ("embedded.configs", False) in {(t, i) for t, i, _ in GRAPH["embedded"]}


def test_pruners_do_not_look_up_the_registry():
    """A pruner is a pure function; a wrapper (SDS) is handed its base by the caller (`api.resolve_base`)."""
    found = [(name, line) for name, imported in GRAPH.items() if name.startswith("pruners")
             for target, _, line in imported if target == "registry"]
    assert not found, found
