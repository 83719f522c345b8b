"""The import rules of the design whiteboard (docs/design/house.json), checked on the code.

Every import (at module level or inside a function) of every module under keras_preact/ and
scripts/ is an edge between modules; the whiteboard's "is" lists put each module in a part.
No edge may go along a "never" arrow, no keras_preact modules may import each other in a
circle, and every keras_preact module must be in a part. keras_preact/__init__.py, the public
facade, is in no part and its imports are not checked against the arrows.
"""

import ast
import collections
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOUSE = ROOT / "docs" / "design" / "house.json"
PACKAGE = "keras_preact"
FACADE = f"{PACKAGE}/__init__.py"
FOLDERS = (PACKAGE, "scripts")

Import = collections.namedtuple("Import", "source target line")


def read_modules(root):
    """``{path: source}`` of every .py file under keras_preact/ and scripts/ of ``root``
    (paths relative to ``root``, with forward slashes)."""
    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for folder in FOLDERS for p in sorted((root / folder).rglob("*.py"))}


def _dotted(path):
    """``keras_preact/a/b.py`` -> ``keras_preact.a.b``; a package's ``__init__.py`` is the package."""
    parts = path[:-len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_imports(modules):
    """Every import in ``modules`` (``{path: source}``) of another of them, as ``Import``s.

    ``import keras_preact.x``, ``from keras_preact import x`` (x a module, else the package),
    ``from keras_preact.x import y``, relative imports, and a script's ``import _cli`` (a
    module beside it in scripts/) all count, wherever the import statement stands."""
    by_name = {_dotted(p): p for p in modules if p.startswith(PACKAGE + "/")}
    scripts = {p[len("scripts/"):-len(".py")]: p for p in modules
               if p.startswith("scripts/") and p.count("/") == 1}

    def resolve(name):  # the longest leading part of ``name`` that is one of the modules
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            found = by_name.get(".".join(parts[:end]))
            if found:
                return found
        return scripts.get(name) if len(parts) == 1 else None

    found = []
    for path, source in modules.items():
        package = _dotted(path) if path.endswith("/__init__.py") else _dotted(path).rpartition(".")[0]
        for node in ast.walk(ast.parse(source, filename=path)):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # (relative: from the importing module's package up)
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in by_name
                           else resolve(base) for alias in node.names]
            else:
                continue
            found += [Import(path, t, node.lineno) for t in dict.fromkeys(targets)
                      if t and t != path]
    return found


def parts_of(house):
    """``{path or folder/: part}`` from the whiteboard's "is" lists."""
    return {entry: part for part, info in house["parts"].items() for entry in info["is"]}


def part_of(path, parts):
    """The parts whose "is" lists cover ``path`` (a folder entry covers every file in it)."""
    return sorted({part for entry, part in parts.items()
                   if path == entry or (entry.endswith("/") and path.startswith(entry))})


def never_violations(imports, house):
    """One line for each import along a "never" arrow (the facade's imports aside)."""
    never = {(a, b): why for a, b, why in house["never"]}
    parts = parts_of(house)
    lines = []
    for imp in imports:
        if imp.source == FACADE:
            continue
        for p in part_of(imp.source, parts):
            for q in part_of(imp.target, parts):
                if (p, q) in never:
                    lines.append(f"{imp.source}:{imp.line} imports {imp.target}: {p} -> {q} is "
                                 f"never allowed ({never[p, q]})")
    return lines


def circles(imports):
    """One line per circle of keras_preact modules importing each other: each strongly
    connected group of the import graph, named by a path round it with its import lines."""
    edges = collections.defaultdict(dict)  # {source: {target: line}}
    for imp in imports:
        if imp.source.startswith(PACKAGE + "/") and imp.target.startswith(PACKAGE + "/"):
            edges[imp.source].setdefault(imp.target, imp.line)
    lines = []
    for group in _strongly_connected(edges):
        if len(group) < 2:
            continue
        start = min(group)
        path = _path_back(start, group, edges)
        lines.append("import circle: " + " -> ".join(
            f"{a}:{edges[a][b]}" for a, b in zip(path, path[1:])) + f" -> {start}")
    return sorted(lines)


def _strongly_connected(edges):
    """Tarjan's strongly connected components of ``{node: {neighbour: ...}}``."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _path_back(start, group, edges):
    """The shortest path ``start -> ... -> start`` inside ``group`` (breadth first)."""
    came_from, queue = {}, collections.deque([start])
    while queue:
        node = queue.popleft()
        for other in sorted(edges[node]):
            if other not in group:
                continue
            if other == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1] + [start]
            if other not in came_from:
                came_from[other] = node
                queue.append(other)
    raise AssertionError(f"{start} is in no circle of {sorted(group)}")


def unplaced(modules, house):
    """One line for each keras_preact module (the facade aside) in no part, or in several."""
    parts = parts_of(house)
    lines = []
    for path in sorted(modules):
        if not path.startswith(PACKAGE + "/") or path == FACADE:
            continue
        found = part_of(path, parts)
        if len(found) != 1:
            lines.append(f"{path} is in {' and '.join(found) or 'no part'} of {HOUSE.name}: "
                         "list it in exactly one part's \"is\"")
    return lines


@pytest.fixture(scope="module")
def house():
    return json.loads(HOUSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def imports():
    return find_imports(read_modules(ROOT))


def test_no_import_goes_along_a_never_arrow(imports, house):
    found = never_violations(imports, house)
    assert not found, "\n".join(found)


def test_no_keras_preact_modules_import_each_other_in_a_circle(imports):
    found = circles(imports)
    assert not found, "\n".join(found)


def test_every_keras_preact_module_is_in_one_part(house):
    found = unplaced(read_modules(ROOT), house)
    assert not found, "\n".join(found)


def test_the_checker_reports_a_never_arrow_a_circle_and_an_unplaced_module(tmp_path):
    sources = {
        "keras_preact/__init__.py": "from keras_preact import low\n",
        "keras_preact/low.py": "import os\n\n\ndef f():\n    from . import high\n",
        "keras_preact/high.py": "from keras_preact.low import f\n",
        "keras_preact/loose.py": "import keras_preact.high\n",
        "scripts/_cli.py": "import json\n",
        "scripts/tool.py": "import _cli\nfrom keras_preact import high\n",
    }
    for path, source in sources.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source)
    house = {"parts": {"Top": {"is": ["scripts/", "keras_preact/high.py"]},
                       "Low": {"is": ["keras_preact/low.py"]}},
             "never": [["Low", "Top", "low knows nothing above"]]}
    modules = read_modules(tmp_path)
    assert sorted(modules) == sorted(sources)
    imports = find_imports(modules)
    assert sorted(imports) == sorted([
        Import("keras_preact/__init__.py", "keras_preact/low.py", 1),
        Import("keras_preact/low.py", "keras_preact/high.py", 5),
        Import("keras_preact/high.py", "keras_preact/low.py", 1),
        Import("keras_preact/loose.py", "keras_preact/high.py", 1),
        Import("scripts/tool.py", "scripts/_cli.py", 1),
        Import("scripts/tool.py", "keras_preact/high.py", 2),
    ])
    assert never_violations(imports, house) == [
        "keras_preact/low.py:5 imports keras_preact/high.py: Low -> Top is never allowed "
        "(low knows nothing above)"]
    assert circles(imports) == [
        "import circle: keras_preact/high.py:1 -> keras_preact/low.py:5 -> keras_preact/high.py"]
    assert unplaced(modules, house) == [
        "keras_preact/loose.py is in no part of house.json: list it in exactly one part's \"is\""]


# Keras internals keras_preact once read outside keras_preact/compat.py: its private modules,
# the functional graph's private attributes and its serialised graph's wiring keys.
PRIVATE_KERAS = ("keras.src", "_flatten_layers", "_inbound_nodes", "_outbound_nodes",
                 "_tracker", "keras_history", "inbound_nodes", "_symbolic_build")
COMPAT = f"{PACKAGE}/layers/compat.py"


def _nodes(modules, skip):
    """``(path, node)`` of every AST node of every module but ``skip``."""
    for path, source in modules.items():
        if path != skip:
            yield from ((path, node) for node in ast.walk(ast.parse(source)))


def private_keras_uses(modules):
    """``[(path, line, name)]`` of every mention of a ``PRIVATE_KERAS`` name outside compat:
    an attribute, an imported module, or a string (a key of Keras' serialised graph)."""
    found = []
    for path, node in _nodes(modules, COMPAT):
        names = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        for name in names:
            hit = next((p for p in PRIVATE_KERAS if name == p or name.startswith(p + ".")), None)
            if hit:
                found.append((path, node.lineno, hit))
    return found


def test_keras_internals_are_read_only_in_compat():
    assert private_keras_uses(read_modules(ROOT)) == []


def test_the_private_keras_check_sees_each_kind_of_use():
    modules = {f"{PACKAGE}/a.py": "from keras.src import tree\nx = model._inbound_nodes\n"
                                  "y = config['keras_history']\n",
               COMPAT: "from keras.src import tree\n"}
    assert private_keras_uses(modules) == [(f"{PACKAGE}/a.py", 1, "keras.src"),
                                           (f"{PACKAGE}/a.py", 2, "_inbound_nodes"),
                                           (f"{PACKAGE}/a.py", 3, "keras_history")]


def old_paths(modules):
    """One line for each import, inside the package or the scripts, of a module path of 0.1
    that the facade still serves (``keras_preact.MOVED``): code names a module by its part."""
    facade = ast.parse(modules[FACADE])
    moved = next(ast.literal_eval(node.value) for node in facade.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MOVED")
    lines = []
    for path, node in _nodes(modules, FACADE):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                                     if node.module == PACKAGE else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in moved:
                lines.append(f"{path}:{node.lineno} imports {PACKAGE}.{parts[1]}: write "
                             f"{PACKAGE}.{moved[parts[1]]}")
    return lines


def test_the_code_names_each_module_by_its_part():
    assert old_paths(read_modules(ROOT)) == []
    assert old_paths({FACADE: "MOVED = {'files': 'io.files'}\n",
                      "scripts/x.py": "from keras_preact import files\n"}) == [
        "scripts/x.py:1 imports keras_preact.files: write keras_preact.io.files"]


def test_an_old_module_path_is_the_same_module():
    import keras_preact.train.training
    import keras_preact.training

    assert keras_preact.training is keras_preact.train.training
    spec = importlib.util.find_spec("keras_preact.train.training")  # its own, not the alias's
    assert spec.name == "keras_preact.train.training" and spec.origin.endswith("training.py")
    assert keras_preact.training.__name__ == "keras_preact.train.training"
    from keras_preact import files, models

    assert files.__name__ == "keras_preact.io.files"
    assert models.PreActResNet is models.resnet.PreActResNet
