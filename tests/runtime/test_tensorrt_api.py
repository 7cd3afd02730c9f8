"""Every TensorRT name the runtime backend and engines/ use exists in the installed TensorRT-RTX bindings.

No machine here executes TensorRT, so a misspelt or removed API in a path the tests cannot run (decode on a GPU,
a TensorRT-10-only branch, an error path) would reach users first. This test reads the source instead: it walks
the AST of runtime/backends/tensorrt_{backend,selection}.py, every engines/*.py and plugins/loader.py, follows which values
are TensorRT objects, and checks every attribute read or written on them against the real classes
(`tensorrt_rtx.IExecutionContext.set_tensor_address`, ...). TensorRT 10/11 use the same Python names.

Which values are TensorRT objects:
- the module: a name `trt` or an attribute `.trt` (`job.trt`, `self.trt`), the convention in this code base;
- `trt.X(...)` makes an `X`; a method call returns the class its pybind11 signature names
  (`create_execution_context(...) -> ...IExecutionContext`);
- annotations `trt.X` (parameters, `x: trt.X = ...`), so values that cross functions keep their type;
- types flow through local assignments, tuple unpacking, dict comprehensions, `self.<attr>` within a class,
  and into the parameters and out of the returns of functions and classes defined in the analysed files.
`hasattr(x, "n")` and `getattr(x, "n", default)` are feature probes: the code handles their absence, so a
missing one fails only when it is not a documented TensorRT-only name.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "runtime/backends/tensorrt_backend.py", REPO / "runtime/backends/tensorrt_selection.py",
           *sorted((REPO / "engines").glob("*.py")),
           REPO / "plugins/loader.py"]

# pybind11 prints some return types by their C++ name, or as an accessor: the Python classes they are.
RETURN_ALIASES = {"IParserError": "ParserError"}
FUNCTION_RETURNS = {"get_plugin_registry": "IPluginRegistry", "get_builder_plugin_registry": "IPluginRegistry"}

# Names the code probes for with hasattr/getattr that TensorRT 10 has and TensorRT-RTX does not.
TENSORRT_ONLY: set[tuple[str, str]] = set()

# (class, attribute) uses the walker must keep seeing somewhere in the sources: if a refactor hides one from it
# (a value it can no longer type), this fails instead of the check silently covering less.
MUST_SEE = {
    ("IExecutionContext", "set_input_shape"),
    ("IExecutionContext", "get_tensor_shape"),
    ("IExecutionContext", "set_tensor_address"),
    ("IExecutionContext", "execute_async_v3"),
    ("ICudaEngine", "create_execution_context"),
    ("ICudaEngine", "get_tensor_profile_shape"),
    ("ICudaEngine", "get_tensor_location"),
    ("ICudaEngine", "num_io_tensors"),
    ("Runtime", "deserialize_cuda_engine"),
    ("TensorIOMode", "INPUT"),
    ("TensorLocation", "HOST"),
    ("IBuilderConfig", "set_compute_capability"),
    ("IBuilderConfig", "add_optimization_profile"),
    ("IOptimizationProfile", "set_shape"),
    ("Builder", "build_serialized_network_to_stream"),
    ("ITensor", "is_shape_tensor"),
    ("OnnxParser", "parse_from_file"),
    ("ParserError", "desc"),
    ("INetworkDefinition", "get_input"),
    ("ILayer", "get_output"),
    ("IPluginRegistry", "load_library"),
    ("IPluginRegistry", "get_creator"),
}


# --------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Mod:
    """The TensorRT module."""


@dataclass(frozen=True, eq=False)
class Real:
    """An object reached from the module by attribute: a class, an enum, a function, a member."""

    obj: Any


@dataclass(frozen=True, eq=False)
class Inst:
    """An instance of a TensorRT class."""

    cls: type


@dataclass(frozen=True, eq=False)
class Method:
    owner: Any  # the TensorRT class or object the method was read from
    name: str


@dataclass(frozen=True)
class Ours:
    """An instance of a class defined in the analysed sources, or a reference to one of their functions."""

    key: tuple[str, str]  # (module, qualified name)
    kind: str  # "instance" | "class" | "function" | "method"
    attr: str | None = None  # "method": the method's name


@dataclass(frozen=True, eq=False)
class Tup:
    items: tuple


@dataclass(frozen=True, eq=False)
class Map:
    value: Any


@dataclass(frozen=True, eq=False)
class Seq:
    item: Any


@dataclass(frozen=True)
class Use:
    file: str
    line: int
    owner: str
    attr: str
    exists: bool
    probe: bool  # hasattr / getattr with a default

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.owner}.{self.attr}"


def _merge(old, new):
    """What two sightings of one value say together: the more specific, element by element."""
    if old is None:
        return new
    if new is None:
        return old
    if isinstance(old, Tup) and isinstance(new, Tup) and len(old.items) == len(new.items):
        return Tup(tuple(_merge(a, b) for a, b in zip(old.items, new.items)))
    if isinstance(old, Map) and isinstance(new, Map):
        return Map(_merge(old.value, new.value))
    if isinstance(old, Seq) and isinstance(new, Seq):
        return Seq(_merge(old.item, new.item))
    return old


def _weight(t) -> int:
    """How much a type says (the walker stops when no pass learns more)."""
    if t is None:
        return 0
    if isinstance(t, Tup):
        return 1 + sum(_weight(i) for i in t.items)
    if isinstance(t, Map):
        return 1 + _weight(t.value)
    if isinstance(t, Seq):
        return 1 + _weight(t.item)
    return 1


# Values of these types are data, not TensorRT objects: attributes on them are not TensorRT's API.
_PLAIN = (str, bytes, int, float, bool, dict, list, tuple, set, frozenset, type(None))


def _label(obj) -> str:
    if isinstance(obj, type):
        return obj.__name__
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


# --------------------------------------------------------------------------------------------- the walker


@dataclass
class _Def:
    module: str
    qualname: str
    node: ast.AST  # FunctionDef | ClassDef
    cls: tuple[str, str] | None  # the class a method belongs to
    parent: tuple[str, str] | None  # the function a nested definition lives in


class Walker:
    """Collects every attribute use on TensorRT values in `sources` (module name -> (file label, source))."""

    def __init__(self, trt, sources: dict[str, tuple[str, str]]):
        self.trt = trt
        self.files = {m: label for m, (label, _) in sources.items()}
        self.trees = {m: ast.parse(text) for m, (_, text) in sources.items()}
        self.defs: dict[tuple[str, str], _Def] = {}
        self.imports: dict[str, dict[str, tuple[str, str]]] = {}
        for module, tree in self.trees.items():
            self._index(module, tree.body, "", None, None)
            self.imports[module] = self._imports(tree)
        self.params: dict[tuple[str, str], dict[str, Any]] = {}
        self.returns: dict[tuple[str, str], Any] = {}
        self.attrs: dict[tuple[str, str], dict[str, Any]] = {}
        self.envs: dict[tuple[str, str], dict[str, Any]] = {}
        self.uses: set[Use] = set()

    # ---------------------------------------------------------------- indexing
    def _index(self, module, body, prefix, cls, parent):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = (module, prefix + node.name)
                self.defs[key] = _Def(module, key[1], node, cls, parent)
                self._index(module, node.body, key[1] + ".", None, key)
            elif isinstance(node, ast.ClassDef):
                key = (module, prefix + node.name)
                self.defs[key] = _Def(module, key[1], node, None, parent)
                self._index(module, node.body, key[1] + ".", key, parent)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                nested = [*getattr(node, "body", []), *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
                for handler in getattr(node, "handlers", []):
                    nested += handler.body
                self._index(module, nested, prefix, cls, parent)

    def _imports(self, tree) -> dict[str, tuple[str, str]]:
        found = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in self.trees:
                for alias in node.names:
                    found[alias.asname or alias.name] = (node.module, alias.name)
        return found

    def _lookup_def(self, module: str, scope: tuple[str, str] | None, name: str) -> tuple[str, str] | None:
        """A function or class named `name` visible from `scope` (enclosing functions, module, imports)."""
        while scope is not None:
            key = (module, f"{scope[1]}.{name}")
            if key in self.defs:
                return key
            scope = self.defs[scope].parent
        if (module, name) in self.defs:
            return (module, name)
        imported = self.imports.get(module, {}).get(name)
        return imported if imported in self.defs else None  # constants are not followed

    # ---------------------------------------------------------------- running
    def run(self, max_passes: int = 12) -> set[Use]:
        functions = [k for k, d in self.defs.items() if isinstance(d.node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        before = None
        for _ in range(max_passes):
            for key in functions:
                self._function(key)
            known = self._known()
            if known == before:
                break
            before = known
        return self.uses

    def _known(self) -> int:
        return (sum(_weight(v) for p in self.params.values() for v in p.values())
                + sum(_weight(v) for v in self.returns.values())
                + sum(_weight(v) for a in self.attrs.values() for v in a.values()))

    def _function(self, key):
        d = self.defs[key]
        node = d.node
        env: dict[str, Any] = {}
        args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        known = self.params.get(key, {})
        for i, arg in enumerate(args):
            t = self._annotation(d.module, arg.annotation) if arg.annotation is not None else None
            if i == 0 and d.cls is not None and arg.arg in ("self", "cls"):
                t = Ours(d.cls, "instance")
            env[arg.arg] = t or known.get(arg.arg)
        self.envs[key] = env
        for _ in range(2):  # a second sweep types names a loop body uses before the line that assigns them
            for stmt in node.body:
                self._stmt(key, stmt, env)

    # ---------------------------------------------------------------- statements
    def _stmt(self, key, stmt, env):
        module = key[0]
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in getattr(stmt, "decorator_list", []):
                self._expr(key, dec, env)
            if isinstance(stmt, ast.ClassDef):
                for base in stmt.bases:
                    self._expr(key, base, env)
            return
        if isinstance(stmt, ast.Assign):
            t = self._expr(key, stmt.value, env)
            for target in stmt.targets:
                self._bind(key, target, t, env)
        elif isinstance(stmt, ast.AnnAssign):
            t = self._annotation(module, stmt.annotation)
            value = self._expr(key, stmt.value, env) if stmt.value is not None else None
            self._bind(key, stmt.target, t or value, env)
        elif isinstance(stmt, ast.AugAssign):
            self._expr(key, stmt.value, env)
            self._expr(key, stmt.target, env, store=True)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self._bind(key, stmt.target, self._element(self._expr(key, stmt.iter, env)), env)
            for s in [*stmt.body, *stmt.orelse]:
                self._stmt(key, s, env)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                t = self._expr(key, item.context_expr, env)
                if item.optional_vars is not None:
                    self._bind(key, item.optional_vars, None, env)
            for s in stmt.body:
                self._stmt(key, s, env)
        elif isinstance(stmt, ast.Return):
            if stmt.value is not None:
                self.returns[key] = _merge(self.returns.get(key), self._expr(key, stmt.value, env))
        else:
            for field, value in ast.iter_fields(stmt):
                for child in value if isinstance(value, list) else [value]:
                    if isinstance(child, ast.stmt):
                        self._stmt(key, child, env)
                    elif isinstance(child, ast.expr):
                        self._expr(key, child, env)
                    elif isinstance(child, ast.ExceptHandler):
                        if child.type is not None:
                            self._expr(key, child.type, env)
                        for s in child.body:
                            self._stmt(key, s, env)
                    elif isinstance(child, ast.match_case) if hasattr(ast, "match_case") else False:
                        for s in child.body:
                            self._stmt(key, s, env)

    def _bind(self, key, target, t, env):
        if isinstance(target, ast.Name):
            if t is not None or target.id not in env:
                env[target.id] = t
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = t.items if isinstance(t, Tup) and len(t.items) == len(target.elts) else [None] * len(target.elts)
            for element, item in zip(target.elts, items):
                self._bind(key, element, item, env)
        elif isinstance(target, ast.Attribute):
            owner = self._expr(key, target.value, env)
            if isinstance(owner, Ours) and owner.kind == "instance":
                attrs = self.attrs.setdefault(owner.key, {})
                attrs[target.attr] = _merge(attrs.get(target.attr), t)
            else:
                self._attribute(key, owner, target.attr, target.lineno, probe=False)
        elif isinstance(target, ast.Subscript):
            self._expr(key, target.value, env)
            self._expr(key, target.slice, env)
        elif isinstance(target, ast.Starred):
            self._bind(key, target.value, None, env)

    # ---------------------------------------------------------------- expressions
    def _annotation(self, module, node) -> Any:
        """`trt.X` or "trt.X" -> an instance of X (the name itself is a use)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
            cls = self._attribute((module, "<annotation>"), Mod(), node.attr, node.lineno, probe=False)
            return Inst(cls.obj) if isinstance(cls, Real) and isinstance(cls.obj, type) else None
        return None

    def _element(self, t):
        if isinstance(t, Seq):
            return t.item
        if isinstance(t, Map):
            return None  # iterating a dict yields its keys
        return None

    def _name(self, key, name, env):
        if name == "trt":
            return Mod()
        scope = key
        while scope is not None:
            scope_env = self.envs.get(scope, env) if scope != key else env
            if name in scope_env:
                return scope_env[name]
            scope = self.defs[scope].parent if scope in self.defs else None
        found = self._lookup_def(key[0], self.defs[key].parent if key in self.defs else None, name)
        if found is not None:
            kind = "class" if isinstance(self.defs[found].node, ast.ClassDef) else "function"
            return Ours(found, kind)
        return None

    def _expr(self, key, node, env, store=False):
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return self._name(key, node.id, env)
        if isinstance(node, ast.Attribute):
            owner = self._expr(key, node.value, env)
            if node.attr == "trt":
                return Mod()
            return self._attribute(key, owner, node.attr, node.lineno, probe=False)
        if isinstance(node, ast.Call):
            return self._call(key, node, env)
        if isinstance(node, ast.Subscript):
            t = self._expr(key, node.value, env)
            index = node.slice
            self._expr(key, index, env)
            if isinstance(t, Map):
                return t.value
            if isinstance(t, Tup) and isinstance(index, ast.Constant) and isinstance(index.value, int):
                return t.items[index.value] if -len(t.items) <= index.value < len(t.items) else None
            if isinstance(t, Seq):
                return t.item
            return None
        if isinstance(node, ast.Tuple):
            return Tup(tuple(self._expr(key, e, env) for e in node.elts))
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for gen in node.generators:
                self._bind(key, gen.target, self._element(self._expr(key, gen.iter, env)), env)
                for cond in gen.ifs:
                    self._expr(key, cond, env)
            if isinstance(node, ast.DictComp):
                self._expr(key, node.key, env)
                return Map(self._expr(key, node.value, env))
            return Seq(self._expr(key, node.elt, env))
        if isinstance(node, ast.IfExp):
            self._expr(key, node.test, env)
            a, b = self._expr(key, node.body, env), self._expr(key, node.orelse, env)
            return a if a is not None else b
        if isinstance(node, ast.BoolOp):
            types_ = [self._expr(key, v, env) for v in node.values]
            return next((t for t in types_ if t is not None), None)
        if isinstance(node, ast.NamedExpr):
            t = self._expr(key, node.value, env)
            self._bind(key, node.target, t, env)
            return t
        if isinstance(node, ast.Lambda):
            self._expr(key, node.body, env)
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(key, child, env)
            elif isinstance(child, ast.comprehension):
                self._expr(key, child.iter, env)
        return None

    def _attribute(self, key, owner, attr, line, probe):
        """Record `owner.attr` when owner is a TensorRT value; the type of the result."""
        if isinstance(owner, Mod):
            return self._check(key, self.trt, getattr(self.trt, "__name__", "tensorrt"), attr, line, probe, Real)
        if isinstance(owner, Real):
            return self._check(key, owner.obj, _label(owner.obj), attr, line, probe, Real)
        if isinstance(owner, Inst):
            value = self._check(key, owner.cls, owner.cls.__name__, attr, line, probe, lambda v: v)
            if value is None:
                return None
            if isinstance(value, property) or not callable(value):
                return None  # a property: pybind11 does not document its type
            return Method(owner.cls, attr)
        if isinstance(owner, Ours):
            if owner.kind == "instance":
                if attr in self.attrs.get(owner.key, {}):
                    return self.attrs[owner.key][attr]
                method = (owner.key[0], f"{owner.key[1]}.{attr}")
                if method in self.defs:
                    return Ours(method, "method")
            return None
        if isinstance(owner, Map) and attr in ("items", "values", "get"):
            return Method(owner, attr)
        return None

    def _check(self, key, obj, label, attr, line, probe, wrap):
        missing = object()
        value = getattr(obj, attr, missing)
        self.uses.add(Use(self.files.get(key[0], key[0]), line, label, attr, value is not missing, probe))
        return None if value is missing or isinstance(value, _PLAIN) else wrap(value)

    def _call(self, key, node, env):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            owner = self._expr(key, node.args[0], env)
            for extra in node.args[2:]:
                self._expr(key, extra, env)
            probe = func.id == "hasattr" or len(node.args) > 2
            t = self._attribute(key, owner, node.args[1].value, node.lineno, probe=probe)
            return t if func.id == "getattr" else None
        f = self._expr(key, func, env)
        args = [self._expr(key, a, env) for a in node.args]
        kwargs = {k.arg: self._expr(key, k.value, env) for k in node.keywords}
        if isinstance(f, Real):
            if isinstance(f.obj, type):
                return Inst(f.obj)
            name = getattr(f.obj, "__name__", "")
            return self._returned(f.obj, name, FUNCTION_RETURNS.get(name))
        if isinstance(f, Method):
            if isinstance(f.owner, Map):
                if f.name == "items":
                    return Seq(Tup((None, f.owner.value)))
                return Seq(f.owner.value) if f.name == "values" else f.owner.value
            return self._returned(getattr(f.owner, f.name, None), f.name)
        if isinstance(f, Ours):
            if f.kind == "class":
                init = (f.key[0], f"{f.key[1]}.__init__")
                if init in self.defs:
                    self._pass_args(init, args, kwargs, skip_self=True)
                return Ours(f.key, "instance")
            if f.kind in ("function", "method"):
                self._pass_args(f.key, args, kwargs, skip_self=f.kind == "method")
                return self.returns.get(f.key)
        return None

    def _pass_args(self, fkey, args, kwargs, skip_self):
        node = self.defs[fkey].node
        names = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
        if skip_self or (self.defs[fkey].cls is not None and names and names[0] in ("self", "cls")):
            names = names[1:]
        params = self.params.setdefault(fkey, {})
        for name, t in [*zip(names, args), *kwargs.items()]:
            params[name] = _merge(params.get(name), t)

    def _returned(self, fn, name, override=None):
        """The TensorRT class a pybind11 function or method returns, from its signature; None for others."""
        if override is not None:
            cls = getattr(self.trt, override, None)
            return Inst(cls) if isinstance(cls, type) else None
        doc = getattr(fn, "__doc__", None) or ""
        found = set()
        for m in re.finditer(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\(.*\)\s*->\s*(\S+)\s*$", doc, re.M):
            last = re.split(r"[.:]", m.group(1))[-1]
            cls = getattr(self.trt, RETURN_ALIASES.get(last, last), None)
            found.add(cls if isinstance(cls, type) else None)
        return Inst(found.pop()) if len(found) == 1 and None not in found else None


def collect_uses(trt, sources: dict[str, tuple[str, str]]) -> set[Use]:
    """sources: module name -> (file label, source text)."""
    return Walker(trt, sources).run()


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(REPO)
    return "fastadasp." + ".".join(rel.with_suffix("").parts)


def repo_sources() -> dict[str, tuple[str, str]]:
    return {_module_name(p): (str(p.relative_to(REPO)), p.read_text()) for p in SOURCES}


# --------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def rtx():
    try:
        import tensorrt_rtx
    except Exception as exc:  # ImportError, or OSError when its shared libraries do not load
        pytest.skip(f"tensorrt_rtx cannot be imported ({type(exc).__name__}: {exc}); the API check needs its bindings")
    return tensorrt_rtx


@pytest.fixture(scope="module")
def uses(rtx) -> set[Use]:
    return collect_uses(rtx, repo_sources())


pytestmark = pytest.mark.tensorrt


def test_every_tensorrt_attribute_used_exists_in_tensorrt_rtx(uses):
    missing = sorted(str(u) for u in uses if not u.exists and not u.probe)
    assert not missing, "TensorRT attributes that tensorrt_rtx lacks:\n" + "\n".join(missing)


def test_feature_probes_name_real_apis(uses):
    unknown = sorted(str(u) for u in uses if not u.exists and u.probe and (u.owner, u.attr) not in TENSORRT_ONLY)
    assert not unknown, ("hasattr/getattr probes for names tensorrt_rtx lacks (a typo, or add them to "
                         "TENSORRT_ONLY if TensorRT 10 has them):\n" + "\n".join(unknown))


def test_the_walker_still_sees_the_calls_that_matter(uses):
    seen = {(u.owner, u.attr) for u in uses}
    assert not MUST_SEE - seen, f"no longer typed by the walker: {sorted(MUST_SEE - seen)}"
    assert "runtime/backends/tensorrt_backend.py" in {u.file for u in uses}


SYNTHETIC = '''
from __future__ import annotations


class Runner:
    def __init__(self, trt, data):
        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(data)
        self.context = self.engine.create_execution_context()

    def bind(self, name, address):
        self.context.set_tensor_address(name, address)

    def enqueue(self, stream):
        return launch(self.context, stream)


def launch(context, stream):
    return context.execute_async_v3(stream)


def annotated(ctx: trt.IExecutionContext, engine: "trt.ICudaEngine"):
    if hasattr(ctx, "set_input_shape"):
        ctx.set_input_shape("x", (1,))
    return engine.num_io_tensors
'''


def _walk_synthetic(rtx, source: str) -> set[Use]:
    return collect_uses(rtx, {"synthetic": ("synthetic.py", source)})


def test_a_correct_synthetic_source_passes(rtx):
    uses = _walk_synthetic(rtx, SYNTHETIC)
    seen = {(u.owner, u.attr) for u in uses}
    assert {("IExecutionContext", "set_tensor_address"), ("IExecutionContext", "execute_async_v3"),
            ("ICudaEngine", "create_execution_context"), ("Runtime", "deserialize_cuda_engine"),
            ("IExecutionContext", "set_input_shape"), ("ICudaEngine", "num_io_tensors")} <= seen
    assert all(u.exists for u in uses), [str(u) for u in uses if not u.exists]


@pytest.mark.parametrize("wrong, owner", [
    ("self.context.set_tensor_address(name, address)", "IExecutionContext"),  # through self.<attr>
    ("return context.execute_async_v3(stream)", "IExecutionContext"),  # through a call's parameter
    ("ctx.set_input_shape(\"x\", (1,))", "IExecutionContext"),  # through an annotation
    ("return engine.num_io_tensors", "ICudaEngine"),  # through a string annotation
    ("runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))", "tensorrt_rtx"),  # on the module
    ("self.engine = runtime.deserialize_cuda_engine(data)", "Runtime"),  # on a constructed object
])
def test_a_misspelt_attribute_fails(rtx, wrong, owner):
    # Misspell the last attribute on the line: "execute_async_v3" -> "execute_async_v3x" and so on.
    name = re.findall(r"\.(\w+)\(?", wrong)[-1] if owner != "tensorrt_rtx" else "Runtime"
    misspelt = wrong.replace(f".{name}", f".{name}x", 1)
    assert misspelt != wrong and wrong in SYNTHETIC
    uses = _walk_synthetic(rtx, SYNTHETIC.replace(wrong, misspelt))
    missing = [u for u in uses if not u.exists]
    assert [(u.owner, u.attr) for u in missing] == [(owner, name + "x")]




def test_the_fake_tensorrt_has_no_api_tensorrt_lacks(rtx):
    """Every public method and attribute of the fake's classes exists on the real class of the same name."""
    import fake_tensorrt_runtime

    fake = fake_tensorrt_runtime.make_fake_tensorrt()
    tree = ast.parse(Path(fake_tensorrt_runtime.__file__).read_text())
    missing = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and hasattr(fake, node.name)):
            continue
        real = getattr(rtx, node.name, None)
        if real is None:
            missing.append(node.name)
            continue
        names = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        names |= {t.attr for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign))
                  for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                  if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
        names |= {t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        names |= {e.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Tuple)
                  for e in t.elts if isinstance(e, ast.Name)}
        missing += [f"{node.name}.{n}" for n in sorted(names)
                    if not n.startswith(("_", "fake_")) and not hasattr(real, n)]
    for enum_name in ("DataType", "TensorIOMode", "TensorLocation", "ComputeCapability"):
        missing += [f"{enum_name}.{m}" for m in getattr(fake, enum_name).__members__
                    if not hasattr(getattr(rtx, enum_name), m)]
    missing += [f"ILogger.Severity.{m}" for m in fake.ILogger.Severity.__members__
                if not hasattr(rtx.ILogger.Severity, m)]
    for name in ("Runtime", "ICudaEngine", "IExecutionContext", "get_plugin_registry", "Logger", "ILogger"):
        assert hasattr(rtx, name) and hasattr(fake, name)
    assert not missing, f"the fake has names TensorRT lacks: {missing}"
