"""The package's shape (issue 17): no import circle, no private name imported across modules,
no module over about 400 lines unless its docstring says why one cohesive job needs more."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ravana_db"
LONGEST = 420  # "about 400"
# Modules allowed to be longer, each with the word its opening docstring uses to say why.
LONG = {"ravana_db.schema.history": "append-only"}


def modules():
    """{dotted name: (path, parsed tree)} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = (path, ast.parse(path.read_text(), str(path)))
    return found


def imports(name, path, tree, known, *, lazy):
    """[(imported module, names, line)] of a module's imports of the package: its top-level
    statements, and with lazy also those inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = ast.walk(tree) if lazy else tree.body
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (
                base if node.level else node.module)
            if target not in known:
                continue
            # `from . import run` imports the module run, not a name of the package
            names = [a.name for a in node.names if f"{target}.{a.name}" not in known]
            if names:
                found.append((target, names, node.lineno))
            found += [(f"{target}.{a.name}", [], node.lineno) for a in node.names
                      if f"{target}.{a.name}" in known]
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name in known]
    return found


def cycles(graph):
    """Every import circle in {module: {imported}}, each as a list of modules."""
    found, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def graph(*, lazy):
    known = modules()
    return {name: {t for t, _, _ in imports(name, path, tree, known, lazy=lazy)} - {name}
            for name, (path, tree) in known.items()}


def test_no_import_circle_at_import_time():
    assert cycles(graph(lazy=False)) == []


def test_no_import_circle_through_the_imports_inside_functions_either():
    assert cycles(graph(lazy=True)) == []


def test_no_private_name_is_imported_from_another_module():
    known = modules()
    private = [f"{path.relative_to(PACKAGE.parent)}:{line} {target}.{n}"
               for name, (path, tree) in known.items()
               for target, names, line in imports(name, path, tree, known, lazy=True)
               for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_no_module_over_about_400_lines_without_its_reason():
    long = {name: len(path.read_text().splitlines())
            for name, (path, _) in modules().items()
            if len(path.read_text().splitlines()) > LONGEST}
    assert set(long) <= set(LONG), long
    for name, word in LONG.items():
        path, tree = modules()[name]
        assert word in (ast.get_docstring(tree) or ""), name
