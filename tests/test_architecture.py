"""The shape of the package, checked: no import cycles (function-local imports included), no
private name imported across modules, no public function with a long parameter list."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgeformer"
MAX_PARAMS = 8  # public functions; a CLI command is a form, not a function call (see PARAM_EXEMPT)
PARAM_EXEMPT = {"edgeformer.cli"}


def _modules() -> dict[str, ast.Module]:
    mods = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = ast.parse(f.read_text(), str(f))
    return mods


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods: dict[str, ast.Module]) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)}, edgeformer modules only."""
    out: dict[str, set] = {}
    for mod, tree in mods.items():
        is_pkg = (PKG.parent / Path(*mod.split(".")) / "__init__.py").is_file()
        deps = out.setdefault(mod, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update((a.name, None) for a in node.names if a.name.startswith("edgeformer"))
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_pkg, node)
                if not src.startswith("edgeformer"):
                    continue
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    deps.add((sub, None) if sub in mods else (src, a.name))
    return out


def _graph(mods) -> dict[str, set[str]]:
    g = {m: set() for m in mods}
    for mod, deps in _imports(mods).items():
        for target, _ in deps:
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in mods and target != mod and not mod.startswith(target + ".") and target != "edgeformer":
                g[mod].add(target)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
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
                comps.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return comps


def test_no_import_cycles():
    assert _cycles(_graph(_modules())) == []


def test_no_private_name_crosses_modules():
    mods = _modules()
    crossing = sorted(f"{mod} imports {src}.{name}" for mod, deps in _imports(mods).items() for src, name in deps
                      if name and name.startswith("_") and src != mod and src != "edgeformer")
    assert crossing == []


def test_public_functions_take_few_parameters():
    long = []
    for mod, tree in _modules().items():
        if mod in PARAM_EXEMPT:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - int(bool(a.args) and a.args[0].arg in ("self", "cls"))
                if n > MAX_PARAMS:
                    long.append(f"{mod}.{node.name}: {n} parameters")
    assert long == []


def test_the_checker_sees_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]
