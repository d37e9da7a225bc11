"""The package's imports point one way: no cycles (function-level imports included), kernels/ below
everything, and nothing imports the runtime or the CLI from below."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bertfast"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every bertfast module `name` imports, anywhere in the file (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import bertfast.kernels.gemm as g` and the like
                target = target.rpartition(".")[0]
            # A module's parent packages always initialize before it: not a dependency of its own.
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_function_level_imports_count():
    graph = _graph()
    # the CLI imports the sentence encoder inside its `encode` command: the edge is seen.
    assert "bertfast.sentence" in graph["bertfast.cli"]


@pytest.mark.parametrize(
    "lower, forbidden",
    [
        # kernels import torch and triton (and the torch-only leaves: activations, dtype names, rel_position)
        ("bertfast.kernels", {"bertfast"}),
        (
            "bertfast.ops",
            {
                "bertfast.encoder",
                "bertfast.modeling",
                "bertfast.graphs",
                "bertfast.tuning",
                "bertfast.runtime",
                "bertfast.hf",
            },
        ),
        (
            "bertfast.encoder",
            {
                "bertfast.forward",
                "bertfast.modeling",
                "bertfast.graphs",
                "bertfast.tuning",
                "bertfast.runtime",
                "bertfast.hf",
                "bertfast.heads",
            },
        ),
        # the graphs replay the encoder's math; forward chooses eager or replay; the models call forward
        (
            "bertfast.graphs",
            {"bertfast.forward", "bertfast.modeling", "bertfast.runtime", "bertfast.hf", "bertfast.tuning"},
        ),
        ("bertfast.forward", {"bertfast.modeling", "bertfast.runtime", "bertfast.hf", "bertfast.heads"}),
        ("bertfast.modeling", {"bertfast.tuning", "bertfast.runtime", "bertfast.hf", "bertfast.heads"}),
    ],
)
def test_dependencies_point_down(lower, forbidden):
    graph = _graph()
    allowed_leaves = {"bertfast.activations", "bertfast._dtypes", "bertfast.rel_position"}
    for leaf in allowed_leaves:
        assert not {d for d in graph[leaf] if d.startswith("bertfast")}, f"{leaf} must stay a leaf"
    for name, deps in graph.items():
        if name != lower and not name.startswith(lower + "."):
            continue
        for dep in deps - allowed_leaves:
            if dep.startswith(lower + ".") or dep == lower:
                continue
            assert not any(dep == f or (f != "bertfast" and dep.startswith(f + ".")) for f in forbidden) and not (
                "bertfast" in forbidden and dep.startswith("bertfast")
            ), f"{name} imports {dep}, above it"


def test_importing_bertfast_imports_no_triton_and_hooks_nothing_into_torch():
    """A fresh interpreter: `import bertfast` leaves triton unimported, adds no nn.Module registration
    hook, and sets no module-level slot anywhere: the one call site that replays graphs imports them."""
    code = (
        "import sys, torch.nn.modules.module as m\n"
        "before = (dict(m._global_parameter_registration_hooks), dict(m._global_module_registration_hooks))\n"
        "import bertfast.encoder as e\n"
        "def state(mod):  # every mutable module-level value, as text\n"
        "    return {n: repr(v) for n, v in vars(mod).items() if isinstance(v, (list, dict, set))}\n"
        "alone = state(e)\n"
        "import bertfast, bertfast.forward as f, bertfast.graphs as g\n"
        "after = (dict(m._global_parameter_registration_hooks), dict(m._global_module_registration_hooks))\n"
        "print('triton' in sys.modules, before == after, f.graph_runner is g.graph_runner, state(e) == alone)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "True", "True"]
