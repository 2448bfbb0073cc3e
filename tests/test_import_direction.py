"""Imports run one way: core -> maskgraph.lowering (what operators declare and build their
sparse lowerings from) -> operators (maskgraph.ops) -> the engines that run them (maskgraph.lower
for simulate codegen, maskgraph.sparse) -> hf / eval / calibrate / cli. A module of a lower level
never imports one of a higher level, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "maskgraph"
#: Packages above the operators and the lowering (what they may not import).
UPPER = ("hf", "eval", "calibrate", "cli")


def _imported(path: Path) -> set[str]:
    """Absolute names of the maskgraph modules that ``path`` imports (relative imports resolved)."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            names.add(".".join([*base, *(node.module or "").split(".")]).strip("."))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("folder", ["ops", "lower", "sparse"])
def test_operators_and_lowering_import_nothing_above_them(folder):
    upper = tuple(f"maskgraph.{p}" for p in UPPER)
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(n for n in _imported(path) if n.startswith(upper))
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {bad}"


#: What each layer may not import: the operators build on the core and on maskgraph.lowering's
#: building blocks, never on the engines that run them; those building blocks import no
#: operator and no engine.
FORBIDDEN = {
    "ops": ("maskgraph.sparse", "maskgraph.lower"),
    "lowering": ("maskgraph.ops", "maskgraph.sparse", "maskgraph.lower"),
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_operators_build_on_the_lowering_blocks_not_on_the_engines(folder):
    forbidden = FORBIDDEN[folder] + tuple(f"maskgraph.{p}" for p in UPPER)
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(
            n for n in _imported(path) if n in forbidden or n.startswith(tuple(f + "." for f in forbidden))
        )
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {bad}"


def test_the_layer_check_can_fail(tmp_path):
    """The check above reads relative imports inside functions too."""
    module = ROOT / "ops" / "zoo" / "quest.py"
    imported = _imported(module)
    assert "maskgraph.lowering.keymask" in imported and "maskgraph.lowering.chunk" in imported


def test_kernels_are_a_leaf_package():
    """Every Triton kernel lives in maskgraph/kernels/, which imports no operator, lowering or
    integration module (only errors and triton_util of maskgraph)."""
    below = {"maskgraph.errors", "maskgraph.triton_util"}
    kernels = ROOT / "kernels"
    for path in sorted(kernels.rglob("*.py")):
        ours = {n for n in _imported(path) if n.startswith("maskgraph")}
        bad = sorted(n for n in ours if not n.startswith("maskgraph.kernels") and n not in below)
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {bad}"
    strays = sorted(str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*_kernel.py"))
    assert not strays, f"kernel modules outside maskgraph/kernels/: {strays}"


def test_kernel_modules_share_public_names_only():
    """A kernel module imports another's public names, never a private ``_name``."""
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} of .{node.module}"


def test_every_kernel_module_is_named_by_the_package():
    """The package's constants name exactly its kernel modules, and each launches something."""
    import importlib

    from maskgraph import kernels

    assert sorted(kernels.LAUNCHED + kernels.HELPERS) == kernels.kernel_modules()
    pytest.importorskip("triton")
    for module in kernels.LAUNCHED:
        found = vars(importlib.import_module(module))
        assert any(callable(f) and getattr(f, "__module__", "") == module for f in found.values()), module


def _type_checking(node) -> bool:
    """An ``if TYPE_CHECKING:`` block: imports for annotations, never run."""
    return isinstance(node, ast.If) and (
        getattr(node.test, "id", None) == "TYPE_CHECKING"
        or getattr(node.test, "attr", None) == "TYPE_CHECKING"
    )


def _import_graph(module_level_only: bool):
    """maskgraph's modules and the imports between them (``module_level_only``: the statements
    that run when a module is imported; else every import, deferred ones inside functions too).
    An import of a module's own package is left out (Python has loaded it first anyway);
    ``from package import name`` points at the submodule where ``name`` is one."""
    import networkx as nx

    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if _type_checking(block) for n in ast.walk(block)}
        for node in tree.body if module_level_only else ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [*subs, module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in modules and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def test_no_import_cycles():
    """No module of maskgraph imports itself through others, neither through the imports that
    run at import time nor through deferred ones inside functions."""
    import networkx as nx

    at_import = list(nx.simple_cycles(_import_graph(module_level_only=True)))
    assert not at_import, f"import cycles: {[' -> '.join(c) for c in at_import]}"
    deferred = [sorted(c) for c in nx.simple_cycles(_import_graph(module_level_only=False))]
    assert not deferred, f"import cycles through deferred imports: {deferred}"


def _operator_names_in(path: Path, names: set[str]) -> list[str]:
    """Operator names that ``path`` tests for: string constants equal to one, compared with
    something, used as a dict key, or passed to ``get_op``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        values: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            values += [
                e for v in list(values) if isinstance(v, (ast.Tuple, ast.List, ast.Set)) for e in v.elts
            ]
        elif isinstance(node, ast.Dict):
            values = [k for k in node.keys if k is not None]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "get_op"
        ):
            values = node.args[:1]
        found += [
            f"{v.value!r} (line {v.lineno})"
            for v in values
            if isinstance(v, ast.Constant) and v.value in names
        ]
    return found


@pytest.mark.parametrize("folder", ["sparse", "lower"])
def test_the_lowering_names_no_operator(folder):
    """The sparse engine and the codegen read what each operator declares (its ``sparse=``
    lowering, its family and ports): no module of theirs tests for an operator by name."""
    import maskgraph as mg

    names = set(mg.all_ops())
    for path in sorted((ROOT / folder).rglob("*.py")):
        found = _operator_names_in(path, names)
        assert not found, f"{path.relative_to(ROOT.parent)} names operators: {found}"


def test_the_operator_name_check_can_fail(tmp_path):
    """The check above finds an operator named the way the engine used to name them."""
    bad = tmp_path / "plan.py"
    bad.write_text('LOWERINGS = {"sink": 1}\nif op in ("topk", "other"):\n    pass\n', encoding="utf-8")
    assert len(_operator_names_in(bad, {"sink", "topk"})) == 2
