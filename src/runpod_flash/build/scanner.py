"""Static scan of the project's sources: resource configs and `@remote` functions.

Only `ast` is used, so nothing in the project runs here (least of all a `__main__` block);
the guarded import later reads the live objects.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError

RESOURCE_CLASSES = frozenset({
    "LoadBalancerSlsResource", "CpuLoadBalancerSlsResource", "LiveLoadBalancer",
    "CpuLiveLoadBalancer", "ServerlessEndpoint", "CpuServerlessEndpoint", "LiveServerless",
    "CpuLiveServerless",
})
LOAD_BALANCED_CLASSES = frozenset({
    "LoadBalancerSlsResource", "CpuLoadBalancerSlsResource", "LiveLoadBalancer",
    "CpuLiveLoadBalancer",
})
# Statements whose bodies run at import time; def and class bodies do not.
_BLOCKS = (ast.If, ast.Try, ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)


@dataclass(frozen=True)
class ConfigDecl:
    """A resource config: `var = ResourceClass(name="...")`, or inline in a decorator."""

    class_name: str
    name: str | None  # the `name=` literal; None when it is computed

    @property
    def load_balanced(self) -> bool:
        return self.class_name in LOAD_BALANCED_CLASSES


@dataclass(frozen=True)
class MethodDecl:
    """A public method of a decorated class: what its handle and its routes offer."""

    name: str
    is_async: bool
    params: tuple[str, ...]  # without `self`
    doc: str  # the docstring's first line


@dataclass(frozen=True)
class FunctionDecl:
    """A module-level function decorated with `@remote(...)` (or `@x.remote(...)`).

    `line` is the decorator's line: that is where routing mistakes are made and fixed.
    """

    name: str
    module: str
    file: str
    line: int
    is_async: bool
    params: tuple[str, ...]
    resource_ref: str | None  # the argument as written ("api", "config.api"), if a name
    inline_config: ConfigDecl | None
    method: str | None
    path: str | None
    route_is_literal: bool  # False when method or path is an expression we cannot read
    calls: frozenset[str]  # names called directly in the body
    is_generator: bool = False  # `yield` in its own body: its calls stream items
    is_class: bool = False  # `@remote` on a class: `params` are the constructor's
    methods: tuple[MethodDecl, ...] = ()


@dataclass
class ModuleScan:
    """What one source file declares, plus the names it imports (to follow `from x import api`)."""

    module: str
    file: str
    configs: dict[str, ConfigDecl] = field(default_factory=dict)
    functions: list[FunctionDecl] = field(default_factory=list)
    imported_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    module_aliases: dict[str, str] = field(default_factory=dict)


def module_path(rel_file: str) -> str:
    """`pkg/api.py` -> `pkg.api`; `pkg/__init__.py` -> `pkg`."""
    parts = rel_file.removesuffix(".py").split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _call_name(node: ast.expr) -> str | None:
    """`Foo` for `Foo(...)` and `x.Foo(...)`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attribute accesses on a name; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _keyword(call: ast.Call, name: str, position: int | None = None) -> ast.expr | None:
    """The argument passed as `name=`, or else at `position`."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if position is not None and len(call.args) > position:
        return call.args[position]
    return None


def _yields(body: list[ast.stmt]) -> bool:
    """A `yield` in this body itself, not in a function, lambda or class nested in it."""
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(node))
    return False


def _string(node: ast.expr | None) -> tuple[str | None, bool]:
    """(value, readable): a string literal or None is readable, any other expression is not."""
    if node is None:
        return None, True
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str)):
        return node.value, True
    return None, False


class _ModuleScanner:
    """Fills one ModuleScan from the statements that run when the module is imported."""

    def __init__(self, scan: ModuleScan) -> None:
        self.scan = scan

    @staticmethod
    def config(call: ast.Call) -> ConfigDecl | None:
        class_name = _call_name(call.func)
        if class_name not in RESOURCE_CLASSES:
            return None
        name, _ = _string(_keyword(call, "name"))
        return ConfigDecl(class_name, name)

    def statements(self, body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.function(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                self.assignment(node)
            elif isinstance(node, ast.ImportFrom):
                self.import_from(node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self.scan.module_aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, _BLOCKS):
                for block in ("body", "orelse", "finalbody"):
                    self.statements(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    self.statements(handler.body)

    def assignment(self, node: ast.Assign | ast.AnnAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            return
        if isinstance(node.value, ast.Call):
            decl = self.config(node.value)
            if decl is not None:
                self.scan.configs[targets[0].id] = decl

    def import_from(self, node: ast.ImportFrom) -> None:
        source = node.module or ""
        if node.level:
            package = self.scan.module.split(".")
            if not self.scan.file.endswith("__init__.py"):
                package = package[:-1]
            base = package[: len(package) - node.level + 1]
            source = ".".join([*base, *([source] if source else [])])
        for alias in node.names:
            self.scan.imported_names[alias.asname or alias.name] = (source, alias.name)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        decorator = next(
            (
                d for d in node.decorator_list
                if isinstance(d, ast.Call) and _call_name(d.func) == "remote"
            ),
            None,
        )
        if decorator is None:
            return
        resource = _keyword(decorator, "resource_config", 0)
        inline = self.config(resource) if isinstance(resource, ast.Call) else None
        method, method_ok = _string(_keyword(decorator, "method", 1))
        path, path_ok = _string(_keyword(decorator, "path", 2))
        methods = _methods(node) if isinstance(node, ast.ClassDef) else ()
        if isinstance(node, ast.ClassDef):
            init = next((m for m in node.body if isinstance(m, ast.FunctionDef)
                         and m.name == "__init__"), None)
            params = _params(init.args)[1:] if init is not None else []
        else:
            params = _params(node.args)
        calls = {
            call.func.id
            for stmt in node.body
            for call in ast.walk(stmt)
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
        }
        self.scan.functions.append(FunctionDecl(
            name=node.name,
            module=self.scan.module,
            file=self.scan.file,
            line=decorator.lineno,
            is_async=isinstance(node, ast.AsyncFunctionDef),
            params=tuple(params),
            resource_ref=_dotted(resource) if resource is not None else None,
            inline_config=inline,
            method=method,
            path=path,
            route_is_literal=method_ok and path_ok,
            calls=frozenset(calls),
            is_generator=not isinstance(node, ast.ClassDef) and _yields(node.body),
            is_class=isinstance(node, ast.ClassDef),
            methods=methods,
        ))


def _params(args: ast.arguments) -> list[str]:
    params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return params + [a.arg for a in (args.vararg, args.kwarg) if a is not None]


def _methods(node: ast.ClassDef) -> tuple[MethodDecl, ...]:
    """The public methods the class body defines (not `_private` or dunder ones)."""
    return tuple(
        MethodDecl(
            name=item.name,
            is_async=isinstance(item, ast.AsyncFunctionDef),
            params=tuple(_params(item.args)[1:]),
            doc=(ast.get_docstring(item) or "").strip().split("\n", 1)[0],
        )
        for item in node.body
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
        and not item.name.startswith("_")
        and not any(isinstance(d, ast.Name) and d.id == "staticmethod"
                    for d in item.decorator_list)
    )


def scan_file(project_dir: Path, rel_file: str) -> ModuleScan:
    """Parse one file; a syntax error is a BuildError at its line."""
    source = (project_dir / rel_file).read_bytes()
    try:
        tree = ast.parse(source, filename=rel_file)
    except SyntaxError as exc:
        raise BuildError(f"{rel_file}:{exc.lineno or 1}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # null bytes, on Python versions that raise ValueError for them
        raise BuildError(f"{rel_file}:1: syntax error: {exc}") from None
    scan = ModuleScan(module=module_path(rel_file), file=rel_file)
    _ModuleScanner(scan).statements(tree.body)
    return scan


def scan_project(project_dir: Path, py_files: list[str]) -> dict[str, ModuleScan]:
    """Every file's scan, keyed by module path, in file order."""
    scans = (scan_file(project_dir, rel) for rel in py_files)
    return {scan.module: scan for scan in scans}
