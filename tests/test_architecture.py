"""The house rules, checked on the source: layers point down, no import cycle, no name tables.

Every ``import`` of a trustlab module is read from the source (module level and inside
functions alike, absolute and relative, so a lazy import cannot hide an upward edge). Lookups
through the catalogue (``DEFENSES.get(name)``) are not imports: a registry loads its packages
by name, which is how a lower layer may use what registers above it without depending on it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trustlab"

#: the layers, bottom first; a module may import its own layer and the layers below it
LAYERS: list[tuple[str, ...]] = [
    ("errors", "registry", "utils"),
    ("data", "metrics", "results"),
    ("models",),
    ("train", "config"),
    ("attacks", "generative"),
    ("robust", "collab"),
    ("defenses",),
    ("workflows",),
    ("experiments",),
    ("platform",),
    ("cli", "__main__", "__init__"),
]
LEVEL = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The trustlab module that ``name`` (a module or a module.attribute) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..x import y`` inside ``module``)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports under `if TYPE_CHECKING:` never run
        nodes = [n for n in nodes if not isinstance(n, ast.If)]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(node, module, is_package)
            names = [f"{src}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.startswith("trustlab"):
                mod = _resolve(n, modules)
                if mod is not None:
                    out.add(mod)
    return out


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_layers_point_down() -> None:
    modules = _modules()
    unknown = {_component(m) for m in modules} - set(LEVEL)
    assert not unknown, f"place these packages in LAYERS: {sorted(unknown)}"
    upward = []
    for mod, path in modules.items():
        here = LEVEL[_component(mod)]
        for dep in _imports(path, modules, top_level_only=False):
            if LEVEL[_component(dep)] > here:
                upward.append(f"{mod} -> {dep}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("top_level_only", [True, False], ids=["module-level", "all-imports"])
def test_no_import_cycle(top_level_only: bool) -> None:
    """No cycle among modules; a package's ``__init__`` importing its own sub-modules (which is
    how registration by import works) is not an edge back from those sub-modules."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        deps = _imports(path, modules, top_level_only)
        # importing a parent package for one of its names is a dependency on that package's
        # __init__, which itself only re-exports sub-modules: skip those edges
        graph[mod] = {d for d in deps if d != mod and not mod.startswith(d + ".")}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


#: hand-kept tables of method names that the catalogue replaced; none may come back
OLD_TABLES = re.compile(
    r"^(_ATTACKS|ATTACKS|SHADOW_ATTACKS|DEFENSES|FILTERS|RUNNERS|HEADLINE|DETECTORS|"
    r"TRANSFER_ATTACKS|SUITES|_CLASSES|_SINGLE_NAMES)\s*(:[^=]*)?=(?!\s*Registry\()",
    re.MULTILINE,
)


def test_no_hand_kept_name_tables() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        for m in OLD_TABLES.finditer(path.read_text()):
            found.append(f"{path.relative_to(SRC)}: {m.group(1)}")
    assert not found, "name tables outside the registry:\n" + "\n".join(found)


def test_relative_imports_are_read() -> None:
    """The checker resolves ``from ..x import y`` (so it cannot hide an upward edge)."""
    fn = ast.parse("def f():\n    from ...defenses.backdoor import strip\n").body[0]
    node = fn.body[0]
    assert _absolute(node, "trustlab.attacks.evasion.fgsm", False) == "trustlab.defenses.backdoor"
    assert _absolute(node, "trustlab.attacks.evasion", True) == "trustlab.defenses.backdoor"


def test_every_public_class_is_documented() -> None:
    """Every public class has a docstring; the docstring of every class the catalogue builds
    has an Example, and Args when the class takes settings."""
    import inspect as _inspect

    from trustlab.registry import load_all

    undocumented = []
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            public = isinstance(node, ast.ClassDef) and not node.name.startswith("_")
            if public and not ast.get_docstring(node):
                undocumented.append(f"{path.relative_to(SRC)}:{node.name}")
    assert not undocumented, "classes without a docstring:\n" + "\n".join(undocumented)
    weak = []
    for kind, reg in load_all().items():
        for card in reg:
            if not _inspect.isclass(card.factory) or not card.factory.__module__.startswith(
                "trustlab."
            ):
                continue
            doc = _inspect.getdoc(card.factory) or ""
            if "Example" not in doc or (card.parameters() and "Args" not in doc):
                weak.append(f"{kind} {card.name}: {card.factory.__name__}")
    assert not weak, "catalogue classes without Args/Example:\n" + "\n".join(weak)
