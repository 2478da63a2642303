"""Imports flow one way: core → models → engine → interventions → methods → top (evaluation, data loaders,
the toy, trainers, CLIs). A module imports only from its own layer or below, and no import cycle exists. Read from the
source (every import statement, function-level ones included), not by importing."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Layer of each module, by the longest matching prefix.
LAYERS = {
    0: ("interp.errors", "interp.layout", "interp.stats", "interp.training", "interp.plot", "interp.attention.ops",
        "interp.data.schema", "interp.data.scoring", "interp.data.lmms", "interp.data.hub", "interp.data.prompts",
        "interp.data.aggregate", "interp.methods.aif_math", "interp.vif.gmm", "interp.vif.cvae",
        "interp.vif.diagnostics", "interp.vif.identity", "interp.data.vqa_tables", "interp.toy.scenes",
        "interp.toy.processor"),
    1: ("interp.models", "interp.attention.sites", "interp.attention.check"),
    2: ("interp.engine",),
    3: ("interp.attention", "interp.interventions", "interp.patching", "interp.sweep", "interp.flow", "interp.lens",
        "interp.variants"),
    4: ("interp.methods", "interp.vif"),
    # top: what loads models or data by name (the toy, hub ids) and drives runs: evaluation, trainers, CLIs
    5: ("interp.evaluation", "interp.data", "interp.toy", "interp.vif.train",
        "interp.vif.trainer", "interp.vif.loading"),
}
NAMES = ("core", "models", "engine", "interventions", "methods", "top")


def layer(mod: str) -> int | None:
    if mod == "interp":
        return 5  # the package facade (lazy re-exports): the top
    best, found = -1, None
    for lv, prefixes in LAYERS.items():
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, found = len(p), lv
    return found


def modules() -> dict:
    out = {}
    for d, _, files in os.walk(os.path.join(ROOT, "interp")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
    return out


def imports(mods: dict) -> dict:
    graph = {}
    for m, path in mods.items():
        pkg = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m and t.startswith("interp"):
                    deps.add(t)
        graph[m] = deps
    return graph


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer(m) is None]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_no_upward_import():
    graph = imports(modules())
    bad = [f"{m} ({NAMES[layer(m)]}) imports {d} ({NAMES[layer(d)]})"
           for m, deps in sorted(graph.items()) for d in sorted(deps) if layer(d) > layer(m)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = imports(modules())
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d.startswith(m + "."):  # a package importing its own submodules is not a cycle through it
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_public_surface_is_small_and_resolves():
    import interp

    assert len(interp.__all__) <= 18, interp.__all__
    for name in interp.__all__:
        assert getattr(interp, name) is not None, name
