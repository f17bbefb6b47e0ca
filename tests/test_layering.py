"""privkit's imports run one way: no import cycle, no upward import against the declared layers.

The test reads every module of the package with :mod:`ast` (nothing is imported), resolves
relative imports, and checks two rules:

1. **No cycle among module-level imports.** Imports run at import time (module body, ``if`` /
   ``try`` blocks and class bodies; ``if TYPE_CHECKING:`` blocks excluded) must form a DAG.
2. **No upward import**, module-level *or* inside a function, against :data:`MAY_IMPORT`.
   A deferred import does not make an upward dependency go away; it only hides it.

The layers (``docs/architecture.md`` draws them)::

    base     privkit/__init__.py, errors.py, _optional.py, api.py, envelope.py
    data     base                          (readers and synthetic generators)
    fhe      base                          (ciphertexts, backends, operators, compiler)
    dp       base                          (DP-SGD over Opacus, accounting, attacks)
    nn       base, fhe                     (torch layers with their encrypted twins)
    anon     base, data, fhe, nn, dp       (IMU anonymisation)
    deploy   base, fhe, nn                 (client/server of encrypted programs)
    apps     every layer above but cli/testing
    testing  base, fhe, nn, dp             (helpers shipped for tests; nothing in privkit imports it)
    cli      every layer but testing       (cli.py, __main__.py)

Known violations that cannot be fixed on this branch are listed in :data:`ALLOWED`, each with
its reason. The list must stay short; an entry that no longer matches a real violation fails
the test too, so it is removed as soon as the import is fixed.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "privkit"

BASE_MODULES = {"privkit", "privkit.errors", "privkit._optional", "privkit.api", "privkit.envelope"}
CLI_MODULES = {"privkit.cli", "privkit.__main__"}
SUBPACKAGE_LAYERS = {"data", "fhe", "dp", "nn", "anon", "deploy", "apps", "testing"}

MAY_IMPORT: dict[str, set[str]] = {
    "base": set(),
    "data": {"base"},
    "fhe": {"base"},
    "dp": {"base"},
    "nn": {"base", "fhe"},
    "anon": {"base", "data", "fhe", "nn", "dp"},
    "deploy": {"base", "fhe", "nn"},
    "apps": {"base", "data", "fhe", "nn", "dp", "anon", "deploy"},
    "testing": {"base", "fhe", "nn", "dp"},
    "cli": {"base", "data", "fhe", "nn", "dp", "anon", "deploy", "apps"},
}

# Third-party packages that only one corner of privkit may import.
CONFINED = {
    "tenseal": ("privkit.fhe.seal",),  # the SEAL backend is the only door to TenSEAL
    "opacus": ("privkit.dp",),  # Opacus stays behind the DP layer
}

# (importer, imported) -> why it is still there. Keep this short: every entry is a debt.
ALLOWED: dict[tuple[str, str], str] = {
    # empty: compile() gets privkit.nn's validator through fhe.compiler.register_model_validator
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(module: str) -> str:
    """The declared layer of a privkit module (``privkit.fhe.ops.poly`` -> ``"fhe"``)."""
    if module in BASE_MODULES:
        return "base"
    if module in CLI_MODULES:
        return "cli"
    top = module.split(".")[1]
    if top in SUBPACKAGE_LAYERS:
        return top
    raise AssertionError(
        f"{module} has no declared layer: add it to BASE_MODULES / CLI_MODULES or a subpackage "
        "in tests/test_layering.py (and docs/architecture.md)"
    )


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """Absolute names an import statement loads (``from . import x`` may name a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = [base]
    out += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return out


def _import_time_imports(tree: ast.Module):
    """Import statements that run when the module is imported (not in functions, not TYPE_CHECKING)."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            yield n
        elif isinstance(n, ast.If):
            if "TYPE_CHECKING" in ast.unparse(n.test):
                stack += n.orelse
            else:
                stack += n.body + n.orelse
        elif isinstance(n, ast.Try):
            stack += n.body + n.orelse + n.finalbody + [s for h in n.handlers for s in h.body]
        elif isinstance(n, (ast.With, ast.ClassDef)):
            stack += n.body


class _Graph:
    def __init__(self) -> None:
        self.modules = _modules()
        known = set(self.modules)
        self.import_time: dict[str, set[str]] = collections.defaultdict(set)
        self.all_imports: dict[str, dict[str, int]] = collections.defaultdict(dict)  # -> lineno
        self.external: dict[str, set[str]] = collections.defaultdict(set)
        for mod, path in self.modules.items():
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            early = {id(n) for n in _import_time_imports(tree)}
            for n in ast.walk(tree):
                if not isinstance(n, (ast.Import, ast.ImportFrom)):
                    continue
                for t in _targets(mod, path, n, known):
                    if t == "privkit" or t.startswith("privkit."):
                        if t == mod:
                            continue
                        self.all_imports[mod].setdefault(t, n.lineno)
                        if id(n) in early and t in known:
                            self.import_time[mod].add(t)
                    elif t:
                        self.external[mod].add(t.split(".")[0])


@pytest.fixture(scope="module")
def graph() -> _Graph:
    return _Graph()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    # the checker itself: a two-module loop and a three-module loop are found, a chain is not
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"g"}, "g": set()}
    assert sorted(_cycles(edges)) == [["a", "b"], ["c", "d", "e"]]


def test_declared_layers_form_a_dag():
    assert _cycles(MAY_IMPORT) == []
    for layer, allowed in MAY_IMPORT.items():
        assert allowed <= set(MAY_IMPORT), (layer, allowed - set(MAY_IMPORT))


def test_every_module_has_a_layer(graph):
    assert len(graph.modules) > 50  # the walk found the package
    for mod in graph.modules:
        layer_of(mod)


def test_no_import_cycle_at_module_level(graph):
    cycles = _cycles(graph.import_time)
    lines = []
    for comp in cycles:
        lines.append("cycle: " + ", ".join(comp))
        for a in comp:
            lines += [f"    {a} -> {b}" for b in sorted(graph.import_time[a]) if b in comp]
    print("\n".join(lines))
    assert not cycles, "module-level import cycles in privkit:\n" + "\n".join(lines)


def _upward(graph: _Graph) -> dict[tuple[str, str], int]:
    found = {}
    for mod, targets in graph.all_imports.items():
        src = layer_of(mod)
        for target, lineno in targets.items():
            dst = layer_of(target)
            if dst != src and dst not in MAY_IMPORT[src]:
                found[(mod, target)] = lineno
    return found


def test_no_upward_import(graph):
    found = _upward(graph)
    new = {k: v for k, v in found.items() if k not in ALLOWED}
    report = [
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)}) at line {line}"
        + ("   [allowed: " + ALLOWED[(a, b)] + "]" if (a, b) in ALLOWED else "")
        for (a, b), line in sorted(found.items())
    ]
    print("\n".join(report))
    assert not new, (
        "upward imports against the layering of tests/test_layering.py (move the helper down, "
        "or pass it in):\n" + "\n".join(r for r in report if "[allowed" not in r)
    )
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"ALLOWED entries no longer needed, remove them: {stale}"


def test_confined_third_party_imports(graph):
    bad = []
    for mod, names in graph.external.items():
        for pkg, owners in CONFINED.items():
            if pkg in names and not any(mod == o or mod.startswith(o + ".") for o in owners):
                bad.append(f"{mod} imports {pkg} (only {', '.join(owners)} may)")
    print("\n".join(bad))
    assert not bad, "\n".join(bad)


def _exception_classes(tree: ast.Module) -> list[tuple[str, int]]:
    """Public classes whose base's name ends in Error, Warning or Exception."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ClassDef) and not n.name.startswith("_"):
            for b in n.bases:
                name = b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
                if name.endswith(("Error", "Warning", "Exception")):
                    out.append((n.name, n.lineno))
                    break
    return out


def test_exception_finder_sees_errors_and_warnings():
    tree = ast.parse("class A(ValueError): pass\nclass B(w.UserWarning): pass\nclass _C(Exception): pass\n"
                     "class D(object): pass\n")
    assert _exception_classes(tree) == [("A", 1), ("B", 2)]


def test_errors_and_warnings_live_in_errors_py(graph):
    # one hierarchy in privkit/errors.py (CONVENTIONS.md 7); other modules may re-export names
    # from it, and private control-flow exceptions (leading underscore) may stay local
    stray = []
    for mod, path in graph.modules.items():
        if mod == "privkit.errors":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stray += [f"{mod}:{line} defines {name}" for name, line in _exception_classes(tree)]
    print("\n".join(stray))
    assert not stray, "define errors and warnings in privkit/errors.py:\n" + "\n".join(stray)
