"""The package's layering, as docs/architecture.md draws it, held against the code's own imports.

Each module sits in one layer; a module imports only modules of its own layer or below, the
imports form no cycle, and no module reaches into another's private names (``from .x import _y``
or ``x._y``). Imports inside functions count: a cycle hidden in a function is still a cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sktransfer"

#: Bottom to top. docs/architecture.md draws the same table.
LAYERS = {
    "mechanisms": ["_messages", "_runtime", "_device", "testing"],
    "identity and storage": ["_folders", "_content", "_identity", "_registry", "_weights", "cache", "model_store"],
    "readers, sources and runners": ["_columns", "_texts", "_images", "_text_head", "_backbones", "_timm",
                                     "_quantize", "_backends", "_pipeline"],
    "estimator base": ["base"],
    "encoders": ["text", "image", "clip"],
    "built on encoders": ["_tuning", "_tune_text", "_tune_images", "heads", "finetune", "zeroshot", "fewshot",
                          "tables"],
    "entry points": ["_cluster", "dask", "ray", "spark", "speed", "_cli_embed", "cli", "__main__", "__init__"],
}
LAYER_OF = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """``(imported sktransfer module, names taken from it, line)`` for every import in ``module``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("sktransfer")):
            base = (node.module or "").removeprefix("sktransfer").lstrip(".")
            if base:
                found.append((base.split(".")[0], [a.name for a in node.names], node.lineno))
            else:  # from . import x, y: modules, or names the package's __init__ hands on
                found.extend((a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__",
                              [] if (PACKAGE / f"{a.name}.py").exists() else [a.name], node.lineno)
                             for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((a.name.split(".")[1], [], node.lineno) for a in node.names
                         if a.name.startswith("sktransfer."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYER_OF), (f"not in a layer: {sorted(modules - set(LAYER_OF))}; "
                                      f"gone: {sorted(set(LAYER_OF) - modules)}")


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_imports_run_downwards_and_take_no_private_names(module):
    for imported, names, line in _imports(module):
        assert imported in LAYER_OF, f"{module}.py:{line} imports an unknown module {imported}"
        assert LAYER_OF[imported] <= LAYER_OF[module], (
            f"{module}.py:{line} imports {imported}, a higher layer: move the shared piece down")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{module}.py:{line} takes private names {private} from {imported}"


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_no_private_attribute_of_another_module(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and not node.module:
            aliases.update({a.asname or a.name: a.name for a in node.names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            attr = node.attr
            assert not (attr.startswith("_") and not attr.startswith("__")), (
                f"{module}.py:{node.lineno} uses {node.value.id}.{attr}, a private name of another module")


def test_no_import_cycle():
    graph = {m: {i for i, _, _ in _imports(m) if i != m} for m in LAYER_OF}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_architecture_page_draws_these_layers():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for name, modules in LAYERS.items():
        assert name in page, f"docs/architecture.md does not name the layer {name!r}"
        for module in modules:
            assert f"{module}" in page, f"docs/architecture.md does not place {module}.py"
