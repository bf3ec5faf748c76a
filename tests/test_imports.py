"""The import structure, read from the source with ``ast``: one way (pipeline -> stages -> {data, models}),
no circles, every import through the one name ``msagg``, and no module past ``MAX_LINES``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("pipeline", "stages", "data", "models")
MAX_LINES = 450



def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["msagg", *parts])


def _sources() -> dict[str, Path]:
    """Module name -> file, for every module of the four folders."""
    return {_module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}


MODULES = _sources()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every import statement, at any depth (inside functions and classes too), except those under
    ``if TYPE_CHECKING:``, which never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The msagg modules an import statement loads (a package's name stands for its __init__)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    out = []
    for name in names:
        while name and name not in MODULES:  # "msagg.data.x.Name": the module holding Name
            name = name.rpartition(".")[0]
        if name.startswith("msagg."):
            out.append(name)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = {target for node in _import_nodes(tree) for target in _imported(module, node)} - {module}
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _folder(module: str) -> str:
    return module.split(".")[1]


def test_the_graph_is_read():
    """The checks below see real edges (a parser that found none would pass them all)."""
    assert "msagg.stages.runs.folder" in GRAPH["msagg.stages.prepare"]
    assert "msagg.data.formats.cache" in GRAPH["msagg.stages.pretrain"]
    assert "msagg.stages.training.fit" in GRAPH["msagg.stages.pretrain"]  # inside run()
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("lower, higher", [("data", "stages"), ("data", "pipeline"), ("models", "stages"),
                                           ("models", "pipeline"), ("data", "models"), ("models", "data"),
                                           ("stages", "pipeline")])
def test_imports_run_one_way(lower, higher):
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if _folder(m) == lower
                   for t in targets if _folder(t) == higher)
    assert not wrong, "\n".join(wrong)


def test_no_module_is_too_long():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    too_long = sorted(f"{name}: {n} lines" for name, n in lengths.items()
                      if n > MAX_LINES)
    assert not too_long, f"modules over {MAX_LINES} lines:\n" + "\n".join(too_long)


BARE = re.compile(
    r"(?:^|[\"';(]|\\n)[ \t]*(?:from[ \t]+(?:data|stages|models|pipeline)(?:\.\w+)*[ \t]+import\b"
    r"|import[ \t]+(?:data|stages|models|pipeline)\b)", re.MULTILINE)
"""An import of a folder by its bare name, also inside code held in strings (subprocess snippets)."""


def _bare_imports(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text(encoding="utf-8")
    found = []
    for node in _import_nodes(ast.parse(text, str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if not getattr(node, "level", 0) and any(n.split(".")[0] in FOLDERS for n in names):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    for match in BARE.finditer(text if path != Path(__file__) else ""):  # this file's strings are examples
        found.append(f"{path.relative_to(root)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group().strip()}")
    return found


def test_every_import_goes_through_msagg():
    files = [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "msagg").rglob("*.py"))]
    bare = sorted({line for path in files for line in _bare_imports(path)})
    assert not bare, "imports without the msagg. prefix:\n" + "\n".join(bare)


def test_the_bare_import_check_can_fail(tmp_path):
    for code in ("import stages.prepare\n", "from data.atomic import write_json\n",
                 'run("from models import sample_cnn")\n', "def f():\n    import pipeline.cli as c\n"):
        (tmp_path / "x.py").write_text(code)
        assert _bare_imports(tmp_path / "x.py", tmp_path), code
    (tmp_path / "x.py").write_text("from msagg.data import atomic\n# import data from the cache\n")
    assert not _bare_imports(tmp_path / "x.py", tmp_path)
