"""Architecture rules read from the source tree (AST, nothing imported): who may import whom,
no import cycles, no function over 100 lines. See docs/architecture.md."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Package name -> folder, as mapped in pyproject.toml ([tool.setuptools.package-dir]).
PACKAGES = {"clln.sim": "sim", "clln.gateware": "gateware", "clln.boards": "boards",
            "clln": "clln"}
CORE = {"clln.config", "clln.formats", "clln.datasets", "clln.protocol", "clln.errors",
        "clln.environment", "clln.configs", "clln.nonideal", "clln.checkpoint",
        "clln.processes", "clln.schedule"}
APP = {"clln", "clln.api", "clln.cli", "clln.plot", "clln.flows", "clln.sweeps"}  # and clln.cli_*
#: Layer -> the layers it may import besides itself (the core imports no other layer).
ALLOWED = {"core": set(), "sim": {"core"}, "gateware": {"core"}, "host": {"core"},
           "boards": {"core", "gateware"}}
MAX_FUNCTION_LINES = 100


def modules():
    """Module name -> (path, is_package) for every Python file of the clln packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([package, *parts])] = (path, is_package)
    return found


def layer_of(name):
    if name in CORE or any(name.startswith(core + ".") for core in CORE):
        return "core"
    if name in APP or name.startswith("clln.cli"):
        return "app"
    for prefix, layer in [("clln.sim", "sim"), ("clln.gateware", "gateware"),
                          ("clln.boards", "boards"), ("clln.host", "host")]:
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return "clln"          # a clln/ module that is in no layer: flagged by the test


def imports(name, path, is_package, known):
    """(line, imported clln module) for every import in the file, at any depth."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod if there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:       # a.b.func -> a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((node.lineno, target))
    return out


def graph():
    known = modules()
    return known, {name: imports(name, path, is_pkg, known)
                   for name, (path, is_pkg) in known.items()}


def layer_violations(known, edges, allowed=ALLOWED):
    bad = []
    for name, found in edges.items():
        layer = layer_of(name)
        if layer == "clln":
            bad.append(f"{known[name][0].relative_to(ROOT)}: module {name} is in no layer")
            continue
        if layer == "app":
            continue
        for line, target in found:
            other = layer_of(target)
            if other != layer and other not in allowed[layer]:
                bad.append(f"{known[name][0].relative_to(ROOT)}:{line}: imports {target} "
                           f"({layer} may import only {sorted(allowed[layer] | {layer})})")
    return bad


def cycles(edges):
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for _, w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def cycle_report(edges):
    lines = []
    for component in cycles(edges):
        inside = set(component)
        links = [f"{a} -> {b} (line {line})" for a in component for line, b in edges[a]
                 if b in inside]
        lines.append("cycle " + ", ".join(component) + ": " + "; ".join(links))
    return lines


def long_functions(known, limit=MAX_FUNCTION_LINES):
    bad = []
    for path, _ in known.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is "
                               f"{length} lines (at most {limit})")
    return bad


def test_layers_import_only_what_they_may():
    known, edges = graph()
    bad = layer_violations(known, edges)
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_no_import_cycles():
    _, edges = graph()
    bad = cycle_report(edges)
    assert not bad, "import cycles:\n" + "\n".join(bad)


def test_no_function_over_100_lines():
    known, _ = graph()
    bad = long_functions(known)
    assert not bad, "functions too long:\n" + "\n".join(bad)


# -- the checks themselves ----------------------------------------------------------------


def test_the_checks_catch_what_they_should():
    known, edges = graph()
    assert "clln.sim.benches" in known and "clln.host.driver" in known
    assert layer_of("clln.configs") == "core" and layer_of("clln.cli_board") == "app"
    # a clean rule passes, a broken one fails
    fake = {"clln.protocol": [(1, "clln.errors")], "clln.sim.fixed": [(3, "clln.formats")],
            "clln.boards.demo": [(2, "clln.gateware.uart")]}
    fake_known = {n: (ROOT / "clln" / "x.py", False) for n in fake}
    assert layer_violations(fake_known, fake) == []
    fake["clln.sim.fixed"].append((9, "clln.gateware.uart"))
    assert [v.split(": ", 1)[1] for v in layer_violations(fake_known, fake)] == [
        "imports clln.gateware.uart (sim may import only ['core', 'sim'])"]
    assert cycles({"a": [(1, "b")], "b": [(1, "c")], "c": []}) == []
    assert cycles({"a": [(1, "b")], "b": [(1, "a")], "c": []}) == [["a", "b"]]
    assert long_functions(known, limit=10**6) == []
