"""The shape of ``src/authgear``, read from its source with :mod:`ast` (nothing is imported).

- No import cycles between modules (module-level imports, ``TYPE_CHECKING`` ones included: a
  cycle that only type checkers see still ties the two modules together).
- No private names (``_x``) imported from another module, and no private module of another
  top-level package (``client``, ``backend``, ``server``, ``cli``, ``_errors``) imported.
- Layering: ``client``, ``backend`` and ``server`` never import each other; ``server.storage``
  imports nothing of the server above it. These two rules also cover imports inside functions.
- Storage has one way in: outside ``server.storage`` no module imports its SQL modules
  (``sql``, ``schema``, ``db``) or reads an ``.engine`` attribute; what needs the database gets
  its store from the repository (``repo.admin``, ``repo.authenticators``...).
- No function over 50 lines unless it is in :data:`LONG_FUNCTIONS` with its reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "authgear"
MAX_LINES = 50

# Functions allowed over MAX_LINES, with why (qualified name -> reason).
LONG_FUNCTIONS: dict[str, str] = {
    "authgear.server.config.default_config_text": (
        "one f-string: the commented config file `authgear init` writes, read top to bottom"
    ),
    "authgear.server.storage.migrations.versions.0001_initial_schema.upgrade": (
        "a migration lists its tables and columns as they were; it never changes again"
    ),
    "authgear.client.cli._add_login": (
        "argparse declarations of one command: a flat list of options with their help texts"
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name imported (or the module a name is imported from)
    names: tuple[str, ...]  # names imported from target ("" for `import target`)
    line: int
    module_level: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, ("",), child.lineno, module_level))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child)
                names = tuple(a.name for a in child.names)
                # `from pkg import mod` imports the submodule pkg.mod (and only runs pkg's
                # __init__, which every import of a submodule does: not counted as an edge).
                submodules = [n for n in names if f"{target}.{n}" in MODULES]
                for name in submodules:
                    found.append(
                        Import(module, f"{target}.{name}", ("",), child.lineno, module_level)
                    )
                if len(submodules) < len(names):
                    found.append(Import(module, target, names, child.lineno, module_level))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False)
            else:
                visit(child, module_level)

    visit(tree, True)
    return [i for i in found if i.target == PACKAGE or i.target.startswith(PACKAGE + ".")]


IMPORTS = [i for module, path in MODULES.items() for i in _imports(module, path)]


def _top(module: str) -> str:
    """The top-level package a module belongs to: client, backend, server, cli, _errors..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _where(i: Import) -> str:
    return f"{MODULES[i.importer].relative_to(SRC)}:{i.line}"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.module_level and i.target in MODULES and i.target != i.importer:
            graph[i.importer].add(i.target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            connect(v)
    return found


def test_the_import_graph_reads_the_tree() -> None:
    # Guards the rules below against passing on an empty graph.
    graph = _graph()
    assert "authgear.server.app" in graph
    assert "authgear.server.storage" in graph["authgear.server.state"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_names(imports: list[Import]) -> list[str]:
    return [
        f"{_where(i)} imports {', '.join(n for n in i.names if _is_private(n))} from {i.target}"
        for i in imports
        if i.target in MODULES
        and i.target != i.importer
        and any(_is_private(n) and f"{i.target}.{n}" not in MODULES for n in i.names)
    ]


def _private_modules(imports: list[Import]) -> list[str]:
    """A private module (``authgear.client._core``) imported from another top-level package.
    Top-level private modules (``authgear._errors``, ``authgear._version``) are the
    distribution's shared base and may be imported from anywhere."""
    return [
        f"{_where(i)} imports {i.target}"
        for i in imports
        if _top(i.target) != _top(i.importer)
        and _top(i.importer) != ""  # authgear/__init__.py re-exports the public API
        and any(_is_private(p) for p in i.target.split(".")[2:])
    ]


SIBLINGS = {"client", "backend", "server"}


def _siblings(imports: list[Import]) -> list[str]:
    return [
        f"{_where(i)} imports {i.target}"
        for i in imports
        if _top(i.importer) in SIBLINGS
        and _top(i.target) in SIBLINGS
        and _top(i.target) != _top(i.importer)
    ]


STORAGE = f"{PACKAGE}.server.storage"


def _in_storage(module: str) -> bool:
    return module == STORAGE or module.startswith(STORAGE + ".")


def _above_storage(imports: list[Import]) -> list[str]:
    return [
        f"{_where(i)} imports {i.target}"
        for i in imports
        if _in_storage(i.importer)
        and not _in_storage(i.target)
        and i.target not in {PACKAGE, f"{PACKAGE}._errors", f"{PACKAGE}.server"}
    ]


# The modules that hold the engine and the tables: the repository's insides.
STORAGE_INSIDES = frozenset(f"{STORAGE}.{m}" for m in ("sql", "schema", "db"))


def _storage_insides(imports: list[Import]) -> list[str]:
    return [
        f"{_where(i)} imports {i.target}"
        for i in imports
        if not _in_storage(i.importer) and i.target in STORAGE_INSIDES
    ]


def _engine_reads(module: str, tree: ast.AST) -> list[str]:
    """``x.engine`` read outside storage (the repository's database handle)."""
    if _in_storage(module):
        return []
    return [
        f"{MODULES[module].relative_to(SRC)}:{node.lineno} reads .engine"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "engine"
    ]


def _fake(importer: str, target: str, *names: str) -> Import:
    return Import(importer, target, names or ("",), 1, True)


def test_the_rules_catch_what_they_forbid() -> None:
    # Each rule, fed one offending import, reports it (and passes a harmless one).
    sql, admin = f"{STORAGE}.sql", f"{STORAGE}.admin"
    assert _private_names([_fake(admin, sql, "_user")])
    assert not _private_names([_fake(admin, sql, "SQLRepository")])
    core = f"{PACKAGE}.client._core"
    assert _private_modules([_fake(f"{PACKAGE}.server.app", core, "x")])
    assert not _private_modules([_fake(f"{PACKAGE}.client._sync", core, "x")])
    assert _siblings([_fake(f"{PACKAGE}.backend._jwt", f"{PACKAGE}.server.keys", "x")])
    assert not _siblings([_fake(f"{PACKAGE}.cli.serve", f"{PACKAGE}.server.app", "x")])
    assert _above_storage([_fake(sql, f"{PACKAGE}.server.security.lockout", "x")])
    assert not _above_storage([_fake(sql, f"{STORAGE}.rows", "x")])
    state = f"{PACKAGE}.server.state"
    assert _storage_insides([_fake(state, sql, "SQLRepository")])
    assert not _storage_insides([_fake(state, STORAGE, "Repository")])
    assert not _storage_insides([_fake(admin, sql, "SQLRepository")])
    reads = ast.parse("store = AuthenticatorStore(cast(Any, self.repo).engine)")
    assert _engine_reads(state, reads)
    assert not _engine_reads(sql, reads)
    assert not _engine_reads(state, ast.parse("from authgear.server.signin import engine"))


def test_no_private_names_imported_from_another_module() -> None:
    assert _private_names(IMPORTS) == []


def test_no_private_module_of_another_package_is_imported() -> None:
    assert _private_modules(IMPORTS) == []


def test_client_backend_and_server_never_import_each_other() -> None:
    assert _siblings(IMPORTS) == []


def test_storage_imports_nothing_above_it() -> None:
    assert _above_storage(IMPORTS) == []


def test_nothing_outside_storage_reaches_past_the_repository() -> None:
    assert _storage_insides(IMPORTS) == []
    reads = [
        found
        for module, path in MODULES.items()
        for found in _engine_reads(module, ast.parse(path.read_text(), str(path)))
    ]
    assert reads == []


SPEC = ("RFC ", "OpenID Connect")


def test_every_endpoint_and_protocol_module_cites_its_specification() -> None:
    uncited = [
        module
        for module, path in MODULES.items()
        if module.startswith(("authgear.server.endpoints.", "authgear.server.oauth."))
        and not any(ref in (ast.get_docstring(ast.parse(path.read_text())) or "") for ref in SPEC)
    ]
    assert "authgear.server.endpoints.token" in MODULES
    assert uncited == []


def _functions(path: Path) -> list[tuple[str, int, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                # Counted from the def line (decorators excluded) to the last line.
                found.append((name, child.lineno, (child.end_lineno or child.lineno)))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _long_functions() -> dict[str, int]:
    long: dict[str, int] = {}
    for module, path in MODULES.items():
        for name, start, end in _functions(path):
            if end - start + 1 > MAX_LINES:
                long[f"{module}.{name}"] = end - start + 1
    return long


def test_function_lengths_are_measured() -> None:
    names = {name for name, _, _ in _functions(MODULES["authgear.server.storage.sql"])}
    assert "SQLRepository.create_user" in names


def test_no_function_over_50_lines_without_a_reason() -> None:
    unexplained = {n: lines for n, lines in _long_functions().items() if n not in LONG_FUNCTIONS}
    assert unexplained == {}


@pytest.mark.parametrize("name", sorted(LONG_FUNCTIONS))
def test_each_allowed_long_function_is_still_long(name: str) -> None:
    # An entry whose function was shortened or renamed is stale: remove it.
    assert name in _long_functions()
    assert LONG_FUNCTIONS[name].strip()
