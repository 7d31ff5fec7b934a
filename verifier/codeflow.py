"""Where validation data goes in a training script, read from its syntax tree in one pass.

The model is a small taint analysis. Validation data enters a script through a source: a string
that names the validation shards (`fineweb_val_*.bin`), an attribute that such a value is stored
in (`h.val_files`, `val_data.val_tokens`), or, as a fallback, a parameter named like validation
data (`val_tokens`). From there it is followed through assignments, slices, method calls,
containers, function parameters and return values, and attributes, through any number of helper
levels. Sizes are not data: `len(x)`, `x.numel()`, `torch.zeros(n)` and the like carry no taint,
so a loop bound derived from the validation length does not taint what the loop computes.
Variables are tracked per definition (the definitions that reach each use, loops and branches
included), so `x, y` reused in `main` for training batches and for validation windows stay apart.
Tuples, lists and dicts whose elements are known keep their labels element by element, through
unpacking, constant subscripts and return values (`train, val = load_splits()`, `files["val"]` of
`{s: glob(f"..{s}..") for s in ("train", "val")}`), and a lambda stored in a variable or a literal
container takes the arguments of the calls made through it (`passes[name](model, tokens)`).

One traversal of the tree records, per function, a compact form of every definition, call,
`backward()`, accumulation (`loss_sum += ...`) and its position (the chain of enclosing blocks);
the fixed points below run on those records, never on the tree again:

1. summaries: which parameters (or validation sources) each definition and each function's return
   value depend on, and which attributes ever hold validation data;
2. contexts: which parameters of each function receive validation data at some call site;
3. effects: which functions score validation data (accumulate a loss under `no_grad` /
   `inference_mode`) or train on it (`backward()`), through any number of call levels.

`Program.val_training()` then lists every `backward()` on validation data with whether a scoring
of validation data precedes it in the same loop iteration (score-first, at any call level; a scoring
that ends where the trained slice begins, `score(toks, lo, hi)` then `train(toks[hi:])`, scored the
chunk before and does not count) and what it looks like (pre-eval TTT, SLOT, compile warm-up).
Nothing in the script is executed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from verifier.pysource import parse

__all__ = ["Program", "Func", "CallSite", "Site", "TrainSite", "analyse", "analyse_source", "V", "VAL_NAME"]

V = 1  # label bit: validation data
K = 2  # a hash key that mixes the token at a position with the tokens before it (target in the key)
P = 4  # a table lookup with such a key: a count read for the target token only
R = 8  # a ratio of two table lookups (count / count)
FIRST_PARAM_BIT = 4  # bits from 1 << 4 up stand for function parameters
CONST_BITS = (1 << FIRST_PARAM_BIT) - 1
VAL_FILES = re.compile(r"fineweb_val|_val_\*|val_\*\.bin|val[\w-]*\*?\.bin\b")
VAL_NAME = re.compile(r"^(?:val|valid|validation)(?:_(?:tokens?|data|ids|stream|set|toks|np|seq|loader|files|bytes)"
                      r"|$)|^(?:x|y|all)_val$")
SHAPE_ONLY = frozenset({
    "len", "numel", "nelement", "size", "dim", "ndimension", "range", "zeros", "ones", "empty", "full",
    "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "rand", "randn", "randint",
    "randperm", "rand_like", "randn_like", "randint_like", "isinstance", "hasattr", "type", "id",
    "perf_counter", "synchronize", "barrier", "is_available", "is_initialized", "get_rank", "get_world_size",
    "manual_seed", "bool", "repr",
})
LOGGING = frozenset({"print", "print0", "log", "log0", "log_fn", "logger"})  # bare-name calls only
SHAPE_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"})
MUTATORS = frozenset({"append", "extend", "insert", "update", "add", "setdefault", "put", "appendleft", "copy_",
                      "fill_", "index_copy_", "index_put_", "scatter_", "masked_scatter_", "set_", "push"})
NOGRAD = frozenset({"no_grad", "inference_mode"})
LOOPS = (ast.For, ast.AsyncFor, ast.While)
# an unknown function (a parameter, a helper in another file) named like an evaluation routine
SCORE_NAME = re.compile(r"^_?(?:eval|evaluate|score)(?:_(?!model$|net$|mode$)\w+)?$", re.I)
OPTIMIZERS = frozenset({"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "LBFGS", "Muon",
                        "Lion", "Adafactor"})


class Def:
    """One definition of a variable: what its value is made of, and (after the fixed point) its labels;
    `keyed`: the labels of each element (key -> labels) when the value is a tuple or dict whose elements
    are known (`train, val = load_splits()`, `files = {s: glob(...) for s in SPLITS}`), else None."""

    __slots__ = ("dep", "labels", "line", "name", "src", "keyed")

    def __init__(self, name: str, dep, line: int, labels: int = 0, src=None):
        self.name, self.dep, self.line, self.labels, self.src, self.keyed = name, dep, line, labels, src, None


class Use:
    """A read of a variable: the definitions that reach it (filled in during and after the pass)."""

    __slots__ = ("name", "defs", "scopes")

    def __init__(self, name: str, defs: tuple, scopes=None):
        self.name, self.defs, self.scopes = name, defs, scopes


class Dep:
    """What an expression's value is made of: constant labels, variable uses, attributes, calls,
    table lookups (whose index decides whether the value is a target-keyed count), element reads
    (`elems`: (container Dep, constant key) of `x[1]`, `files["val"]`, `a, b = f()`) and, for a literal
    tuple, list or dict, its elements by key (`items`; the other fields hold all of them merged)."""

    __slots__ = ("const", "uses", "attrs", "calls", "lookups", "elems", "items")

    def __init__(self, const=0, uses=(), attrs=(), calls=(), lookups=(), elems=(), items=None):
        self.const, self.uses, self.attrs, self.calls, self.lookups = const, uses, attrs, calls, lookups
        self.elems, self.items = elems, items


EMPTY = Dep()


def _merge2(a: Dep, b: Dep) -> Dep:
    """_merge of two (the common case), without building lists."""
    if b is EMPTY:
        return a
    if a is EMPTY:
        return b
    return Dep(a.const | b.const, a.uses + b.uses, a.attrs + b.attrs if b.attrs else a.attrs, a.calls + b.calls,
               a.lookups + b.lookups, a.elems + b.elems)


def _merge(deps) -> Dep:
    deps = [d for d in deps if d is not EMPTY]
    if not deps:
        return EMPTY
    if len(deps) == 1:
        return deps[0]
    const, uses, attrs, calls, lookups, elems = 0, [], [], [], [], []
    for d in deps:
        const |= d.const
        uses.extend(d.uses)
        attrs.extend(d.attrs)
        calls.extend(d.calls)
        lookups.extend(d.lookups)
        elems.extend(d.elems)
    return Dep(const, tuple(uses), tuple(set(attrs)), tuple(calls), tuple(lookups), tuple(elems))


def _structured(items: dict) -> Dep:
    """A literal container: its elements merged, and kept by key."""
    m = _merge(items.values())
    return Dep(m.const, m.uses, m.attrs, m.calls, m.lookups, m.elems, items)


def _element(dep: Dep, key) -> Dep:
    """`dep[key]` for a constant key: the element itself when the container is a literal, else a read
    that the fixed point resolves through definitions and return values (Program.keyed_labels)."""
    if dep.items is not None:
        return dep.items.get(key, EMPTY)
    return EMPTY if dep is EMPTY else Dep(elems=((dep, key),))


@dataclass(eq=False)
class Site:
    """A backward(), an accumulation or another node of interest, with where it stands."""

    func: "Func"
    node: ast.AST
    dep: Dep
    chain: tuple  # ((owner node, block list, index), ...) from the function body inwards
    nograd: bool
    line: int


@dataclass(eq=False)
class CallSite:
    func: "Func"
    node: ast.Call
    name: str
    method: bool  # called as obj.name(...)
    recv: Dep | None
    args: list
    kwargs: dict
    chain: tuple
    nograd: bool
    line: int
    targets: list = field(default_factory=list)  # functions it may reach (resolved after the pass)
    implicit_from: "CallSite | None" = None  # timed_eval(label, fn, *args): the call of fn
    star: int = -1  # index of the first *args argument
    bound: dict = field(default_factory=dict)  # callee -> [(parameter bit, Dep)]


@dataclass(eq=False)
class Func:
    name: str
    node: ast.AST | None
    cls: str | None
    parent: "Func | None" = None
    root: "Func | None" = None  # the outermost enclosing function (shares the parameter-bit space)
    params: list = field(default_factory=list)  # [(name, bit)]
    vararg_bit: int = 0
    kwarg_bit: int = 0
    next_bit: int = FIRST_PARAM_BIT - 1
    all_defs: dict = field(default_factory=dict)  # name -> [Def]
    defs: list = field(default_factory=list)  # every Def, in program order
    free_readers: set = field(default_factory=set)  # functions that read this one's variables as free names
    attr_stores: list = field(default_factory=list)  # [(attr, Dep)]
    returns: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    backwards: list = field(default_factory=list)
    accums: list = field(default_factory=list)
    leaves: set = field(default_factory=set)  # names bound to fresh requires_grad tensors / nn.Parameter
    optimizers: list = field(default_factory=list)  # CallSites constructing an optimizer
    blends: list = field(default_factory=list)  # Sites of `(1 - a) * x + a * y`
    xors: list = field(default_factory=list)  # BinOp BitXor / bitwise_xor nodes
    divisions: list = field(default_factory=list)  # Sites of `x / y`
    lookups: list = field(default_factory=list)  # Sites of `table[index]` reads
    idents: set = field(default_factory=set)
    globals_: set = field(default_factory=set)
    decorated_nograd: bool = False
    ret: int = 0
    ret_keyed: dict | None = None  # labels of each element when every return value is a known container
    callers: list = field(default_factory=list)
    acc_ng: int = 0
    acc_any: int = 0
    train: int = 0
    val_in: int = 0  # on roots: parameter bits that receive validation data
    scoring_stmts: set | None = None
    line: int = 0
    prog: "Program | None" = field(default=None, repr=False)

    @property
    def own_bits(self) -> int:
        bits = self.vararg_bit | self.kwarg_bit
        for _, b in self.params:
            bits |= b
        return bits

    def def_lines(self, name: str) -> list[int]:
        return [d.line for d in self.all_defs.get(name, ())]


@dataclass
class TrainSite:
    """A backward() on validation data and how the verifier reads it."""

    func: Func
    line: int
    kind: str  # "pre-eval" | "slot" | "warmup"
    scored_first: bool | None  # None: never reached with validation data
    epochs: bool
    causal_hint: bool  # SLOT: the optimised loss reads only context (already scored) positions
    gates: list
    path: list  # function names from the site up to where it was decided
    local_gates: list = field(default_factory=list)  # the flags tested around the site in its own function


def _name_of(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _with_grad_mode(items, current: bool) -> bool:
    for item in items:
        expr = item.context_expr
        func = expr.func if isinstance(expr, ast.Call) else expr
        name = _name_of(func)
        if name in NOGRAD:
            current = True
        elif name == "enable_grad":
            current = False
        elif name == "set_grad_enabled" and isinstance(expr, ast.Call) and expr.args:
            if isinstance(expr.args[0], ast.Constant):
                current = not bool(expr.args[0].value)
    return current


def _decorated_nograd(node) -> bool:
    for dec in getattr(node, "decorator_list", ()):
        func = dec.func if isinstance(dec, ast.Call) else dec
        if _name_of(func) in NOGRAD:
            return True
    return False


def _one_minus(node) -> bool:
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and isinstance(node.left, ast.Constant)
            and node.left.value in (1, 1.0))


def _subscript_terms(node, state: dict, depth: int = 0) -> list[tuple[str, str, int]]:
    """(array, index variable, offset) of the `A[i]`, `A[i - k]`, `A[..., 1:]` terms an expression
    is made of, following local variables to their definitions (two levels)."""
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Subscript):
            arr = _name_of(n.value)
            sl = n.slice
            if isinstance(sl, ast.Tuple) and sl.elts:
                sl = sl.elts[-1]
            if isinstance(sl, ast.Name):
                out.append((arr, sl.id, 0))
            elif isinstance(sl, ast.BinOp) and isinstance(sl.left, ast.Name) and isinstance(sl.op, (ast.Sub, ast.Add)):
                out.append((arr, sl.left.id, -1 if isinstance(sl.op, ast.Sub) else 1))
            elif isinstance(sl, ast.Slice):
                lo, hi = sl.lower, sl.upper
                if isinstance(lo, ast.Constant) and hi is None and lo.value == 1:
                    out.append((arr, "<shift>", 0))  # t[..., 1:]: the token at each position
                elif lo is None and isinstance(hi, ast.UnaryOp) and isinstance(hi.operand, ast.Constant):
                    out.append((arr, "<shift>", -1))  # t[..., :-1]: the token before it
        elif isinstance(n, ast.Name) and depth < 2:
            for d in state.get(n.id, ()):
                src = d.src
                value = getattr(src, "value", None) if isinstance(src, (ast.Assign, ast.AugAssign)) else None
                if value is not None and value is not node:
                    out.extend(_subscript_terms(value, {}, depth + 1) if depth else
                               _subscript_terms(value, state, depth + 1))
    return out


_TARGET_NAME = re.compile(r"^(?:y|y_\w*|\w*_y|tgt\w*|targets?|target_\w*|\w*_targets?|\w*_tgt|next_tok\w*)$")


def _target_hash(node, state: dict) -> bool:
    """A hash that mixes the token at a position with the tokens before it: `A[i] ^ f(A[i - k])`,
    or a target (`y`, `tgt`, `targets`) XORed into a context hash."""
    parts = node.args if isinstance(node, ast.Call) else [node.left, node.right]
    if len(parts) != 2:
        return False
    terms = []
    for part in parts:
        terms.extend(_subscript_terms(part, state))
    seen: dict[tuple[str, str], set] = {}
    for arr, idx, off in terms:
        seen.setdefault((arr, idx), set()).add(off)
    if any(0 in offs and -1 in offs for offs in seen.values()):
        return True
    named = [any(_TARGET_NAME.match(x) for x in _idents(part)) for part in parts]
    return named[0] != named[1]


def _reads_table(node) -> bool:
    """An operand that reads a table entry: `counts[k]`, `np.maximum(counts[k], 1.0)`."""
    return any(isinstance(n, ast.Subscript) and isinstance(n.slice, (ast.Name, ast.Tuple, ast.Attribute))
               for n in ast.walk(node))


def _reduction(node) -> bool:
    """`x.sum(-1)`, `torch.logsumexp(...)`: a division by it normalizes."""
    return isinstance(node, ast.Call) and _name_of(node.func) in ("sum", "logsumexp", "norm", "mean")


def _is_blend(node: ast.BinOp) -> bool:
    """`(1 - a) * x + a * y` in either order."""
    sides = (node.left, node.right)
    if not all(isinstance(s, ast.BinOp) and isinstance(s.op, ast.Mult) for s in sides):
        return False
    return any(_one_minus(s.left) or _one_minus(s.right) for s in sides)


def _is_true(node, consts: dict) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is True
    return isinstance(node, ast.Name) and consts.get(node.id, None) is True


def _is_leaf(value, consts: dict) -> bool:
    """A fresh tensor optimised directly: torch.zeros(..., requires_grad=True), nn.Parameter(...)."""
    if not isinstance(value, ast.Call):
        return False
    name = _name_of(value.func)
    if name == "Parameter":
        return True
    if name == "requires_grad_" and isinstance(value.func, ast.Attribute):
        return isinstance(value.func.value, ast.Call)
    return any(kw.arg == "requires_grad" and _is_true(kw.value, consts) for kw in value.keywords)


def _constant_seq(node, const_seqs: dict) -> list | None:
    """The strings of a literal tuple or list of string constants, or of a module constant naming one."""
    if isinstance(node, ast.Name):
        return const_seqs.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def _names_val(node, var: str, value: str) -> bool:
    """An f-string in the expression names the validation files once `var` is `value`
    (`f"{path}/fineweb_{split}_*.bin"` with split = "val"; verifier.pysource reads an f-string as the
    tuple of its parts)."""
    for n in ast.walk(node):
        if isinstance(n, ast.Tuple):
            text = "".join(p.value if isinstance(p, ast.Constant) and isinstance(p.value, str) else
                           value if isinstance(p, ast.Name) and p.id == var else "" for p in n.elts)
            if VAL_FILES.search(text):
                return True
    return False


def _join(a: dict, b: dict) -> dict:
    if a is b:
        return dict(a)
    out = dict(a)
    for k, v in b.items():
        old = out.get(k)
        if old is None:
            out[k] = v
        elif old is not v and old != v:
            out[k] = tuple(set(old) | set(v))
    return out


class _Builder:
    """The single traversal of the tree."""

    def __init__(self, prog: "Program"):
        self.prog = prog
        self.free_uses: list[Use] = []

    # -- functions ------------------------------------------------------------------------------
    def new_func(self, node, name: str, cls: str | None, parent: Func | None) -> Func:
        f = Func(name=name, node=node, cls=cls, parent=parent, line=getattr(node, "lineno", 0), prog=self.prog)
        if parent is not None and not isinstance(parent.node, (ast.ClassDef, ast.Module)):
            f.root = parent.root or parent
        owner = f.root or f
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for arg in list(getattr(a, "posonlyargs", [])) + list(a.args) + list(a.kwonlyargs):
                owner.next_bit += 1
                f.params.append((arg.arg, 1 << owner.next_bit))
            if a.vararg:
                owner.next_bit += 1
                f.vararg_bit = 1 << owner.next_bit
            if a.kwarg:
                owner.next_bit += 1
                f.kwarg_bit = 1 << owner.next_bit
            f.decorated_nograd = _decorated_nograd(node)
        self.prog.funcs.append(f)
        self.prog.by_name.setdefault(name, []).append(f)
        return f

    def entry_state(self, f: Func) -> dict:
        state = {}
        node = f.node
        for name, bit in f.params:
            state[name] = (self.define(f, name, EMPTY, f.line, bit),)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if node.args.vararg:
                state[node.args.vararg.arg] = (self.define(f, node.args.vararg.arg, EMPTY, f.line, f.vararg_bit),)
            if node.args.kwarg:
                state[node.args.kwarg.arg] = (self.define(f, node.args.kwarg.arg, EMPTY, f.line, f.kwarg_bit),)
        return state

    def module(self, tree: ast.Module) -> None:
        for st in tree.body:  # minified aliases: _A=None;_B=True;_C=False; SPLITS = ("train", "val")
            if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
                if isinstance(st.value, ast.Constant):
                    self.prog.consts[st.targets[0].id] = st.value.value
                elif (names := _constant_seq(st.value, {})) is not None:
                    self.prog.const_seqs[st.targets[0].id] = names
        mod = self.new_func(tree, "<module>", None, None)
        self.prog.module = mod
        self.run(tree.body, mod, tree)
        for use, reader in self.free_uses:
            for scope in use.scopes:
                defs = scope.all_defs.get(use.name)
                if defs:
                    use.defs = tuple(defs)
                    scope.free_readers.add(reader)
                    break

    def run(self, body: list, f: Func, owner) -> None:
        ctx = _Ctx(f, self.entry_state(f))
        self.block(body, ctx, (), f.decorated_nograd, owner)

    def define(self, f: Func, name: str, dep: Dep, line: int, labels: int = 0, src=None) -> Def:
        d = Def(name, dep, line, labels, src)
        target = self.prog.module if name in f.globals_ and self.prog.module is not None else f
        target.all_defs.setdefault(name, []).append(d)
        target.defs.append(d)
        self.prog.defs.append(d)
        return d

    # -- statements -----------------------------------------------------------------------------
    def block(self, stmts: list, ctx: "_Ctx", chain: tuple, nograd: bool, owner) -> None:
        for i, st in enumerate(stmts):
            self.stmt(st, ctx, chain + ((owner, stmts, i),), nograd)

    def stmt(self, st, ctx: "_Ctx", chain: tuple, nograd: bool) -> None:
        t = type(st)
        f = ctx.f
        if t is ast.Assign:
            dep = self.expr(st.value, ctx, chain, nograd)
            for target in st.targets:
                self.target(target, dep, ctx, chain, nograd, st)
        elif t is ast.Expr:
            self.expr(st.value, ctx, chain, nograd)
        elif t is ast.AugAssign:
            dep = self.expr(st.value, ctx, chain, nograd)
            old = self.expr(st.target, ctx, chain, nograd, store=True)
            self.target(st.target, _merge([dep, old]), ctx, chain, nograd, st)
            if isinstance(st.op, (ast.Add, ast.Sub)):
                f.accums.append(Site(f, st, dep, chain, nograd, st.lineno))
        elif t is ast.If:
            self.expr(st.test, ctx, chain, nograd)
            before = ctx.state
            ctx.state = dict(before)
            self.block(st.body, ctx, chain, nograd, st)
            after_body, ctx.state = ctx.state, dict(before)
            self.block(st.orelse, ctx, chain, nograd, st)
            ctx.state = _join(after_body, ctx.state)
        elif t in (ast.For, ast.AsyncFor, ast.While):
            if t is ast.While:
                self.expr(st.test, ctx, chain, nograd)
            else:
                dep = self.expr(st.iter, ctx, chain, nograd)
            before = ctx.state
            ctx.state = dict(before)
            ctx.loops.append(([], {}))
            if t is not ast.While:
                self.target(st.target, dep, ctx, chain, nograd, st)
            self.block(st.body, ctx, chain, nograd, st)
            self.close_loop(ctx)
            ctx.state = _join(before, ctx.state)
            self.block(st.orelse, ctx, chain, nograd, st)
        elif t in (ast.With, ast.AsyncWith):
            inner = _with_grad_mode(st.items, nograd)
            for item in st.items:
                dep = self.expr(item.context_expr, ctx, chain, nograd)
                if item.optional_vars is not None:
                    self.target(item.optional_vars, dep, ctx, chain, nograd, st)
            self.block(st.body, ctx, chain, inner, st)
        elif t is ast.Return:
            if st.value is not None:
                f.returns.append(self.expr(st.value, ctx, chain, nograd))
        elif t in (ast.FunctionDef, ast.AsyncFunctionDef):
            for dec in st.decorator_list:
                self.expr(dec, ctx, chain, nograd)
            for default in st.args.defaults + [d for d in st.args.kw_defaults if d is not None]:
                self.expr(default, ctx, chain, nograd)
            cls = f.name[7:-1] if f.name.startswith("<class ") else None
            g = self.new_func(st, st.name, cls, f)
            ctx.state[st.name] = (self.define(f, st.name, EMPTY, st.lineno),)
            self.run(st.body, g, st)
        elif t is ast.ClassDef:
            for b in st.bases:
                self.expr(b, ctx, chain, nograd)
            c = self.new_func(st, f"<class {st.name}>", None, f)
            self.prog.classes.add(st.name)
            self.run(st.body, c, st)
        elif t is ast.AnnAssign:
            if st.value is not None:
                dep = self.expr(st.value, ctx, chain, nograd)
                self.target(st.target, dep, ctx, chain, nograd, st)
        elif t is ast.Try or t.__name__ == "TryStar":
            before = ctx.state
            ctx.state = dict(before)
            self.block(st.body, ctx, chain, nograd, st)
            after_body = ctx.state
            ends = [after_body]
            for h in st.handlers:
                ctx.state = _join(before, after_body)
                if h.name:
                    ctx.state[h.name] = (self.define(f, h.name, EMPTY, h.lineno),)
                self.block(h.body, ctx, chain, nograd, h)
                ends.append(ctx.state)
            ctx.state = dict(after_body)
            self.block(st.orelse, ctx, chain, nograd, st)
            ends[0] = ctx.state
            state = ends[0]
            for e in ends[1:]:
                state = _join(state, e)
            ctx.state = state
            self.block(st.finalbody, ctx, chain, nograd, st)
        elif t is ast.Global or t is ast.Nonlocal:
            f.globals_.update(st.names) if t is ast.Global else None
        elif t is ast.Match:
            self.expr(st.subject, ctx, chain, nograd)
            before, ends = ctx.state, []
            for case in st.cases:
                ctx.state = dict(before)
                self.block(case.body, ctx, chain, nograd, case)
                ends.append(ctx.state)
            state = before
            for e in ends:
                state = _join(state, e)
            ctx.state = state
        else:  # Raise, Assert, Delete, Import, Pass, Break, Continue
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.expr) and not isinstance(getattr(child, "ctx", None), ast.Del):
                    self.expr(child, ctx, chain, nograd)

    def close_loop(self, ctx: "_Ctx") -> None:
        """Definitions made in a loop body reach the uses earlier in that body (next iteration)."""
        uses, defs = ctx.loops.pop()
        for use in uses:
            extra = defs.get(use.name)
            if extra:
                use.defs = tuple(set(use.defs) | set(extra))
        if ctx.loops:
            outer_uses, outer_defs = ctx.loops[-1]
            outer_uses.extend(uses)
            for name, ds in defs.items():
                outer_defs.setdefault(name, []).extend(ds)

    def bind(self, ctx: "_Ctx", name: str, dep: Dep, line: int, src=None) -> None:
        d = self.define(ctx.f, name, dep, line, 0, src)
        ctx.state[name] = (d,)
        if ctx.loops:
            ctx.loops[-1][1].setdefault(name, []).append(d)

    def load(self, ctx: "_Ctx", name: str) -> Use:
        f = ctx.f
        defs = ctx.state.get(name)
        if defs is not None and name not in f.globals_:
            use = Use(name, defs)
        else:
            scopes = []
            p = f.parent
            while p is not None:
                if not isinstance(p.node, ast.ClassDef):
                    scopes.append(p)
                p = p.parent
            if name in f.globals_ and self.prog.module is not None:
                scopes = [self.prog.module]
            use = Use(name, (), scopes)
            self.free_uses.append((use, f))
        if ctx.loops:
            ctx.loops[-1][0].append(use)
        return use

    def target(self, node, dep: Dep, ctx: "_Ctx", chain, nograd, st) -> None:
        t = type(node)
        f = ctx.f
        if t is ast.Name:
            self.bind(ctx, node.id, dep, st.lineno, st)
            if f.name.startswith("<class "):
                f.attr_stores.append((node.id, dep))  # a class attribute (Hyperparameters.val_files)
            if isinstance(st, (ast.Assign, ast.AnnAssign)) and _is_leaf(st.value, self.prog.consts):
                f.leaves.add(node.id)
        elif t in (ast.Tuple, ast.List):
            starred = any(isinstance(elt, ast.Starred) for elt in node.elts)
            for i, elt in enumerate(node.elts):
                self.target(elt, dep if starred else _element(dep, i), ctx, chain, nograd, st)
        elif t is ast.Starred:
            self.target(node.value, dep, ctx, chain, nograd, st)
        elif t is ast.Attribute:
            f.attr_stores.append((node.attr, dep))
            base = node.value
            if isinstance(base, ast.Name) and base.id not in ("self", "cls"):
                self.bind(ctx, base.id, _merge([dep, Dep(0, (self.load(ctx, base.id),))]), st.lineno)
            else:
                self.expr(base, ctx, chain, nograd)
        elif t is ast.Subscript:
            self.expr(node.slice, ctx, chain, nograd)
            base = node.value
            while isinstance(base, ast.Subscript):
                self.expr(base.slice, ctx, chain, nograd)
                base = base.value
            if isinstance(base, ast.Name):
                self.bind(ctx, base.id, _merge([dep, Dep(0, (self.load(ctx, base.id),))]), st.lineno)
            elif isinstance(base, ast.Attribute):
                f.attr_stores.append((base.attr, dep))
                self.expr(base.value, ctx, chain, nograd)

    # -- expressions ----------------------------------------------------------------------------
    def expr(self, node, ctx: "_Ctx", chain, nograd, store: bool = False) -> Dep:
        t = type(node)
        if t is ast.Name:
            ctx.f.idents.add(node.id)
            return Dep(0, (self.load(ctx, node.id),))
        if t is ast.Constant:
            v = node.value
            if isinstance(v, str) and len(v) < 400 and VAL_FILES.search(v):
                return Dep(V)
            return EMPTY
        if t is ast.Attribute:
            ctx.f.idents.add(node.attr)
            base = self.expr(node.value, ctx, chain, nograd)
            if node.attr in SHAPE_ATTRS:
                return EMPTY
            return Dep(base.const, base.uses, base.attrs + (node.attr,), base.calls, base.lookups, base.elems)
        if t is ast.Call:
            return self.call(node, ctx, chain, nograd)
        if t is ast.Subscript:
            index = self.expr(node.slice, ctx, chain, nograd)
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, (int, str)) and not store:
                return _element(self.expr(node.value, ctx, chain, nograd), node.slice.value)
            dep = _merge2(self.expr(node.value, ctx, chain, nograd), index)
            if not store and index is not EMPTY:
                ctx.f.lookups.append(Site(ctx.f, node, index, chain, nograd, node.lineno))
                return _merge([dep, Dep(0, (), (), (), (ctx.f.lookups[-1],))])
            return dep
        if t is ast.BinOp:
            dep = _merge2(self.expr(node.left, ctx, chain, nograd), self.expr(node.right, ctx, chain, nograd))
            op = type(node.op)
            f = ctx.f
            if op is ast.BitXor and _target_hash(node, ctx.state):
                f.xors.append(node)
                dep = _merge([dep, Dep(K)])
            elif op is ast.Div:
                f.divisions.append(Site(f, node, dep, chain, nograd, node.lineno))
                if _reads_table(node.left) and _reads_table(node.right) and not _reduction(node.right):
                    dep = _merge([dep, Dep(R)])
            elif op is ast.Add and _is_blend(node):
                f.blends.append(Site(f, node, dep, chain, nograd, node.lineno))
            return dep
        if t is ast.Compare:
            self.expr(node.left, ctx, chain, nograd)
            for c in node.comparators:
                self.expr(c, ctx, chain, nograd)
            return EMPTY
        if t in (ast.Tuple, ast.List) and not any(isinstance(e, ast.Starred) for e in node.elts):
            return _structured({i: self.expr(e, ctx, chain, nograd) for i, e in enumerate(node.elts)})
        if t is ast.Dict and all(isinstance(k, ast.Constant) for k in node.keys):
            return _structured({k.value: self.expr(v, ctx, chain, nograd) for k, v in zip(node.keys, node.values)})
        if t in (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp):
            return self.comprehension(node, ctx, chain, nograd)
        if t is ast.Lambda:
            # read as if the body ran where the lambda is written (timed_eval(lambda: eval_ttt(...))); its
            # parameters take the arguments of the calls through the container it is stored in (call_stored)
            saved = ctx.state
            ctx.state = dict(saved)
            a = node.args
            params = self.prog.lambda_params[id(node)] = []
            for arg in list(getattr(a, "posonlyargs", [])) + list(a.args) + list(a.kwonlyargs):
                params.append(self.define(ctx.f, arg.arg, EMPTY, node.lineno))
                ctx.state[arg.arg] = (params[-1],)
            dep = self.expr(node.body, ctx, chain, nograd)
            ctx.state = saved
            return dep
        if t is ast.NamedExpr:
            dep = self.expr(node.value, ctx, chain, nograd)
            self.bind(ctx, node.target.id, dep, node.lineno)
            return dep
        if t is ast.IfExp:
            self.expr(node.test, ctx, chain, nograd)
            return _merge([self.expr(node.body, ctx, chain, nograd), self.expr(node.orelse, ctx, chain, nograd)])
        return _merge([self.expr(child, ctx, chain, nograd) for child in ast.iter_child_nodes(node)
                       if isinstance(child, ast.expr)])

    def comprehension(self, node, ctx: "_Ctx", chain, nograd) -> Dep:
        """A comprehension; over a literal sequence of names (`{s: glob(f"..{s}..") for s in ("train",
        "val")}`) it is a container whose element for each name holds what that name makes of it."""
        for gen in node.generators:
            it = self.expr(gen.iter, ctx, chain, nograd)
            self.target(gen.target, it, ctx, chain, nograd, node)
            for cond in gen.ifs:
                self.expr(cond, ctx, chain, nograd)
        dict_comp = isinstance(node, ast.DictComp)
        value = node.value if dict_comp else node.elt
        dep = self.expr(value, ctx, chain, nograd)
        if dict_comp:
            dep = _merge2(self.expr(node.key, ctx, chain, nograd), dep)
        gen = node.generators[0]
        names = _constant_seq(gen.iter, self.prog.const_seqs)
        if not names or len(node.generators) > 1 or gen.ifs or not isinstance(gen.target, ast.Name):
            return dep
        var = gen.target.id
        if dict_comp and _name_of(node.key) != var:
            return dep
        return _structured({name if dict_comp else i: _merge2(dep, Dep(V) if _names_val(value, var, name) else EMPTY)
                            for i, name in enumerate(names)})

    def call_stored(self, func, args: list, ctx: "_Ctx") -> None:
        """`passes[name](model, tokens)`, `fn(model, tokens)`: the lambdas stored in the variable (or in the
        literal container assigned to it) take these arguments as their parameters."""
        while isinstance(func, ast.Subscript):
            func = func.value
        if not isinstance(func, ast.Name):
            return
        for d in ctx.state.get(func.id, ()):
            value = getattr(d.src, "value", None)
            stored = [value] if isinstance(value, ast.Lambda) else getattr(value, "values", getattr(value, "elts", []))
            for lam in stored:
                for param, arg in zip(self.prog.lambda_params.get(id(lam), ()), args):
                    param.dep = _merge2(param.dep, arg)

    def call(self, node: ast.Call, ctx: "_Ctx", chain, nograd) -> Dep:
        f = ctx.f
        func = node.func
        method = isinstance(func, ast.Attribute)
        name = _name_of(func)
        recv = self.expr(func.value, ctx, chain, nograd) if method else None
        if not method and not isinstance(func, ast.Name):
            self.expr(func, ctx, chain, nograd)
        args = [self.expr(a, ctx, chain, nograd) for a in node.args]
        if not method:
            self.call_stored(func, args, ctx)
        kwargs = {kw.arg: self.expr(kw.value, ctx, chain, nograd) for kw in node.keywords}
        star = next((i for i, a in enumerate(node.args) if isinstance(a, ast.Starred)), -1)
        site = CallSite(f, node, name, method, recv, args, kwargs, chain, nograd, node.lineno, star=star)
        f.calls.append(site)
        if method and name == "backward":
            f.backwards.append(Site(f, node, recv, chain, nograd, node.lineno))
        elif name == "grad" and args and method and _name_of(func.value) == "autograd":
            f.backwards.append(Site(f, node, args[0], chain, nograd, node.lineno))
        elif name == "add_" and method and args:
            f.accums.append(Site(f, node, args[0], chain, nograd, node.lineno))
        elif name in OPTIMIZERS:
            f.optimizers.append(site)
        elif name == "bitwise_xor" and _target_hash(node, ctx.state):
            f.xors.append(node)
            return Dep(K, (), (), (site,))
        if method and name in MUTATORS:
            base = func.value
            while isinstance(base, ast.Subscript):
                base = base.value
            mdep = _merge(args + list(kwargs.values()) + [recv])
            if isinstance(base, ast.Name):
                self.bind(ctx, base.id, mdep, node.lineno)
            elif isinstance(base, ast.Attribute):
                f.attr_stores.append((base.attr, _merge(args + list(kwargs.values()))))
        if name in SHAPE_ONLY or (not method and name in LOGGING):
            return EMPTY
        return Dep(0, (), (), (site,))


class _Ctx:
    """Traversal state inside one function: the definitions that reach the current point."""

    __slots__ = ("f", "state", "loops")

    def __init__(self, f: Func, state: dict):
        self.f, self.state, self.loops = f, state, []


class Program:
    """The facts of one script (see the module docstring)."""

    def __init__(self):
        self.funcs: list[Func] = []
        self.by_name: dict[str, list[Func]] = {}
        self.classes: set[str] = set()
        self.defs: list[Def] = []
        self.module: Func | None = None
        self.tainted_attrs: set[str] = set()
        self.consts: dict = {}
        self.const_seqs: dict = {}  # module-level tuples of string constants: SPLITS = ("train", "val")
        self.lambda_params: dict = {}  # id(lambda node) -> the Defs of its parameters
        self._training: list | None = None
        self.problem: str | None = None
        self.problem_line: int | None = None

    def release(self) -> None:
        """Break the reference cycles of the model (functions <-> calls, definitions <-> uses) so that
        reference counting frees it at once, without the cyclic garbage collector."""
        for f in self.funcs:
            for items in (f.calls, f.callers, f.backwards, f.accums, f.optimizers, f.blends, f.divisions,
                          f.lookups, f.returns, f.xors, f.attr_stores):
                items.clear()
            f.all_defs.clear()
            f.prog = f.parent = f.root = None
        for d in self.defs:
            d.dep = d.src = None
        self.funcs, self.defs, self.by_name, self.module = [], [], {}, None
        self._training = None

    # -- labels ---------------------------------------------------------------------------------
    def labels(self, dep: Dep, f: Func) -> int:
        m = dep.const
        for u in dep.uses:
            for d in u.defs:
                m |= d.labels
        if dep.attrs:
            tainted = self.tainted_attrs
            for a in dep.attrs:
                if a in tainted:
                    m |= V
                    break
        for c in dep.calls:
            m |= self.call_labels(c, f)
        for site in dep.lookups:
            if self.labels(site.dep, site.func) & K:
                m |= P
        for base, key in dep.elems:
            keyed = self.keyed_labels(base, f)
            m |= self.labels(base, f) if keyed is None else keyed.get(key, 0)
        return m

    def keyed_labels(self, dep: Dep, f: Func) -> dict | None:
        """The labels of each element of a container value (key -> labels): a literal, a variable whose
        every definition is one, or a call whose every callee returns one; None when unknown."""
        if dep.items is not None:
            return {k: self.labels(v, f) for k, v in dep.items.items()}
        if dep.const or dep.attrs or dep.lookups or dep.elems or len(dep.uses) + len(dep.calls) != 1:
            return None
        if dep.uses:
            parts = [d.keyed for d in dep.uses[0].defs]
        else:
            c = dep.calls[0]
            parts = [None if g.ret_keyed is None else {k: self.instantiate(c, g, m, f) for k, m in g.ret_keyed.items()}
                     for g in c.targets] or [None]
        if any(p is None for p in parts):
            return None
        return _union(parts)

    def fix_shapes(self) -> None:
        """Which definitions and return values are containers with known elements, decided before the
        labels so that an element read never starts from the whole container's labels."""
        for _ in range(5):
            changed = False
            for f in self.funcs:
                for d in f.defs:
                    if d.keyed is None and d.dep is not EMPTY and self.keyed_labels(d.dep, f) is not None:
                        d.keyed, changed = {}, True
                if f.ret_keyed is None and f.returns and all(self.keyed_labels(r, f) is not None for r in f.returns):
                    f.ret_keyed, changed = {}, True
            if not changed:
                return

    def call_labels(self, c: CallSite, f: Func) -> int:
        if not c.targets:
            m = self.labels(c.recv, f) if c.recv is not None else 0
            for a in c.args:
                m |= self.labels(a, f)
            for a in c.kwargs.values():
                m |= self.labels(a, f)
            return m
        m = 0
        for g in c.targets:
            if g.ret:
                m |= self.instantiate(c, g, g.ret, f)
        return m

    def instantiate(self, c: CallSite, g: Func, mask: int, f: Func) -> int:
        """A callee mask (V and the callee's parameter bits) seen from the calling function."""
        if not mask:
            return 0
        out = mask & CONST_BITS
        own = g.own_bits
        closure = mask & ~own & ~CONST_BITS  # values a nested function took from its enclosing function
        if closure:
            if (f.root or f) is (g.root or g):
                out |= closure
            elif closure & (g.root or g).val_in:  # a callback called elsewhere carries what it captured
                out |= V
        if not mask & own:
            return out
        for bit, dep in self.bindings(c, g):
            if mask & bit:
                out |= self.labels(dep, f)
        return out

    @staticmethod
    def bindings(c: CallSite, g: Func) -> list[tuple[int, Dep]]:
        """(parameter bit, argument) pairs of a call to g: the receiver binds self, `*args` binds every
        parameter from its position on, `**kwargs` every parameter."""
        out = c.bound.get(id(g))
        if out is not None:
            return out
        out = []
        params = g.params
        offset = 1 if (c.method and g.cls is not None and params and params[0][0] in ("self", "cls")) else 0
        if offset and c.recv is not None:
            out.append((params[0][1], c.recv))
        for i, a in enumerate(c.args):
            j = i + offset
            if c.star >= 0 and i >= c.star:
                out += [(bit, a) for _, bit in params[j:]] + [(g.vararg_bit, a)]
            else:
                out.append((params[j][1] if j < len(params) else g.vararg_bit, a))
        by_name = dict(params)
        for k, a in c.kwargs.items():
            if k is None:
                out += [(bit, a) for _, bit in params[offset:]] + [(g.kwarg_bit, a)]
            else:
                out.append((by_name.get(k, g.kwarg_bit), a))
        c.bound[id(g)] = out
        return out

    @staticmethod
    def root_of(f: Func) -> Func:
        return f.root or f

    def is_val(self, f: Func, mask: int) -> bool:
        return bool(mask & (V | (f.root or f).val_in))

    # -- resolution and fixed points ------------------------------------------------------------
    def resolve(self) -> None:
        for f in self.funcs:
            for c in list(f.calls):
                cands = self.by_name.get(c.name, ())
                if c.method:
                    c.targets = [g for g in cands if g.cls is not None]
                else:
                    c.targets = [g for g in cands if g.cls is None and g.name != "<lambda>"]
                for g in c.targets:
                    g.callers.append(c)
                self._implicit_call(c, f)

    def _implicit_call(self, c: CallSite, f: Func) -> None:
        """`timed_eval(label, eval_val_ttt, h, model, ...)`: a function passed as an argument is
        taken to be called with the arguments that follow it, when the called function forwards them
        (`*args`) or is unknown; a callback handed to a known function is resolved inside it."""
        if c.targets and not any(g.vararg_bit for g in c.targets):
            return
        params = {n for n, _ in f.params}
        for i, a in enumerate(c.node.args):
            if not isinstance(a, ast.Name) or a.id not in self.by_name or a.id in params:
                continue
            targets = [g for g in self.by_name[a.id] if g.cls is None and g.name != "<lambda>"]
            if not targets:
                continue
            rest = c.node.args[i + 1:]
            star = next((k for k, x in enumerate(rest) if isinstance(x, ast.Starred)), -1)
            implicit = CallSite(f, c.node, a.id, False, None, c.args[i + 1:], dict(c.kwargs), c.chain, c.nograd,
                                c.line, targets, c, star)
            f.calls.append(implicit)
            for g in targets:
                g.callers.append(implicit)
            return

    def fix_summaries(self) -> None:
        """Labels of every definition, return value and attribute, by a worklist over functions: a
        function is re-read when a callee's return value, an attribute it reads or a variable of an
        enclosing scope it reads gained a label."""
        attr_readers: dict[str, set] = {}
        for f in self.funcs:
            attrs: set = set()
            for d in f.defs:
                _dep_attrs(d.dep, attrs)
            for dep in f.returns:
                _dep_attrs(dep, attrs)
            for a in attrs:
                attr_readers.setdefault(a, set()).add(f)
        queue, queued = list(reversed(self.funcs)), set(self.funcs)

        def push(funcs):
            for g in funcs:
                if g not in queued:
                    queued.add(g)
                    queue.append(g)

        steps = 0
        while queue and steps < 50 * len(self.funcs) + 100:
            steps += 1
            f = queue.pop()
            queued.discard(f)
            grew = False
            for _ in range(20):
                moved = False
                for d in f.defs:
                    if d.dep is EMPTY:
                        continue
                    m = d.labels | self.labels(d.dep, f)
                    if m != d.labels:
                        d.labels = m
                        moved = True
                    if d.keyed is not None:
                        keyed = _union([d.keyed, self.keyed_labels(d.dep, f) or {}])
                        if keyed != d.keyed:
                            d.keyed, moved = keyed, True
                if not moved:
                    break
                grew = True
            if grew:
                push(f.free_readers)
            for attr, dep in f.attr_stores:
                if attr not in self.tainted_attrs and self.labels(dep, f) & V:
                    self.tainted_attrs.add(attr)
                    push(attr_readers.get(attr, ()))
            ret = 0
            for dep in f.returns:
                ret |= self.labels(dep, f)
            keyed = f.ret_keyed
            if keyed is not None:
                keyed = _union([keyed] + [self.keyed_labels(r, f) or {} for r in f.returns])
            if ret != f.ret or keyed != f.ret_keyed:
                f.ret, f.ret_keyed = ret, keyed
                push({c.func for c in f.callers})

    def fix_contexts(self) -> None:
        for f in self.funcs:
            for name, bit in f.params:
                if VAL_NAME.match(name):
                    self.root_of(f).val_in |= bit
        for _ in range(20):
            changed = False
            for f in self.funcs:
                for c in f.calls:
                    for g in c.targets:
                        gain = self._arg_val_bits(c, g, f)
                        groot = self.root_of(g)
                        if gain & ~groot.val_in:
                            groot.val_in |= gain
                            changed = True
            if not changed:
                return

    def _arg_val_bits(self, c: CallSite, g: Func, f: Func) -> int:
        bits = 0
        for bit, dep in self.bindings(c, g):
            if bit and not bits & bit and self.is_val(f, self.labels(dep, f)):
                bits |= bit
        return bits

    def fix_effects(self) -> None:
        for f in self.funcs:
            for a in f.accums:
                m = self.labels(a.dep, f)
                f.acc_any |= m
                if a.nograd:
                    f.acc_ng |= m
            for b in f.backwards:
                f.train |= self.labels(b.dep, f)
        for _ in range(20):
            changed = False
            for f in self.funcs:
                ng, anyacc, train = f.acc_ng, f.acc_any, f.train
                for c in f.calls:
                    if not c.targets:
                        if not c.method and SCORE_NAME.search(c.name):
                            ng |= self.call_labels(c, f)
                        continue
                    for g in c.targets:
                        if g.acc_ng:
                            ng |= self.instantiate(c, g, g.acc_ng, f)
                        if g.acc_any:
                            inst = self.instantiate(c, g, g.acc_any, f)
                            anyacc |= inst
                            if c.nograd:
                                ng |= inst
                        if g.train:
                            train |= self.instantiate(c, g, g.train, f)
                if (ng, anyacc, train) != (f.acc_ng, f.acc_any, f.train):
                    f.acc_ng, f.acc_any, f.train = ng, anyacc, train
                    changed = True
            if not changed:
                return

    # -- questions the checks ask -----------------------------------------------------------------
    def scores_val(self, c: CallSite, f: Func) -> bool:
        """Does this call accumulate a loss on validation data without gradients (scoring)?"""
        if not c.targets:
            return not c.method and bool(SCORE_NAME.search(c.name)) and self.is_val(f, self.call_labels(c, f))
        for g in c.targets:
            m = self.instantiate(c, g, g.acc_ng, f)
            if c.nograd:
                m |= self.instantiate(c, g, g.acc_any, f)
            if self.is_val(f, m):
                return True
        return False

    def trains_val(self, c: CallSite, f: Func) -> bool:
        return any(self.is_val(f, self.instantiate(c, g, g.train, f)) for g in c.targets)

    def rescoring(self) -> list[tuple[Func, CallSite, CallSite, str]]:
        """(function, adapting call, later scoring call, model name): validation data is scored again
        by a call that receives the same model after a call that trained that model on validation data."""
        out = []
        for f in self.funcs:
            calls = sorted((c for c in f.calls if c.targets), key=lambda c: c.line)
            trainers = [c for c in calls if self.trains_val(c, f)]
            for c1 in trainers:
                if not self.scores_val(c1, f):  # no first scoring pass: pre-eval TTT, not a second pass
                    continue
                models = _model_args(c1)
                end = getattr(c1.node, "end_lineno", c1.line) or c1.line
                for c2 in calls:
                    if c2.line <= end or c2 is c1 or _exclusive(c1.chain, c2.chain) or not self.scores_val(c2, f):
                        continue
                    shared = [m for m in _model_args(c2) if m in models
                              and not any(c1.line < ln < c2.line for ln in f.def_lines(m))]
                    if shared:
                        out.append((f, c1, c2, shared[0]))
                        break
        return out

    def strings_near(self, f: Func, line: int, span: int = 8) -> list[str]:
        """String constants of the calls on the lines from `line` to `line + span` (log labels)."""
        out = []
        for c in f.calls:
            if line <= c.line <= line + span:
                out += [n.value for n in ast.walk(c.node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        return out

    def calibration_reads(self) -> list[tuple[Func, int, str]]:
        """(function, line, callee) where a calibration routine (GPTQ, Hessians) reads validation data."""
        out = []
        for f in self.funcs:
            if _CALIB.search(f.name):  # a calibration routine that loads validation data itself
                for c in f.calls:
                    if any(self.labels(a, f) & V for a in list(c.args) + ([c.recv] if c.recv else [])):
                        out.append((f, c.line, f.name))
                        break
            for c in f.calls:
                if _CALIB.search(c.name) and any(self.is_val(f, self.labels(a, f)) for a in
                                                 list(c.args) + list(c.kwargs.values())):
                    out.append((f, c.line, c.name))
        return out

    def scoring_statements(self, f: Func) -> set:
        if f.scoring_stmts is None:
            marked = set()
            sites = [a for a in f.accums if a.nograd and self.is_val(f, self.labels(a.dep, f))]
            sites += [c for c in f.calls if self.scores_val(c, f)]
            for s in sites:
                for _, block, i in s.chain:
                    marked.add(id(block[i]))
            f.scoring_stmts = marked
        return f.scoring_stmts

    def val_training(self) -> list[TrainSite]:
        if self._training is None:
            self._training = self._val_training()
        return self._training

    def _val_training(self) -> list[TrainSite]:
        out = []
        for f in self.funcs:
            for b in f.backwards:
                mask = self.labels(b.dep, f)
                if not self.is_val(f, mask):
                    continue
                verdict, path, gates = self._scored_first(f, b.chain, mask, frozenset(), [f.name], None)
                out.append(TrainSite(f, b.line, self._kind(f, b), verdict, self._epochs_on_path(b.chain, path),
                                     self._causal_hint(f, b), gates, path, self.gates(f, b.chain)))
        return out

    def _scored_first(self, f: Func, chain: tuple, mask: int, seen: frozenset, path: list, via: CallSite | None):
        """(True/False/None, path, gate names): whether every way of reaching this point with
        validation data scores validation data earlier in the same loop iteration (`via`: the call
        that trains, whose slice must not begin where a scoring before it ends). None: never
        reached with validation data (the function is not called with it)."""
        scoring = self.scoring_statements(f)
        gates = self.gates(f, chain)
        straight = False
        for k in range(len(chain) - 1, -1, -1):
            _, block, idx = chain[k]
            if any(id(block[j]) in scoring for j in range(idx)):
                if any(isinstance(owner, LOOPS) for owner, _, _ in chain[:k + 1]):
                    return not self._trains_ahead(f, via, block, idx, k), path, gates
                straight = True
        if f.name == "<module>":
            return straight, path, gates
        callers = [(c, self.instantiate(c, f, mask, c.func)) for c in f.callers if c.func is not f]
        callers = [(c, m) for c, m in callers if self.is_val(c.func, m)]
        if not callers:
            return None, path, gates
        if f in seen or len(seen) > 8:
            return False, path, gates
        results = []
        for c, m in callers:
            if straight:
                results.append((self._called_in_loop(c, seen | {f}), path + [c.func.name], self.gates(c.func, c.chain)))
            else:
                results.append(self._scored_first(c.func, c.chain, m, seen | {f}, path + [c.func.name], c))
        decided = [r for r in results if r[0] is not None]
        if not decided:
            return None, path, gates
        bad = [r for r in decided if r[0] is False]
        chosen = bad[0] if bad else decided[0]
        return (not bad), chosen[1], gates + chosen[2]

    def _trains_ahead(self, f: Func, via: CallSite | None, block: list, idx: int, k: int) -> bool:
        """The training call's slice of validation data begins where a window scored before it in the
        same block ends (`score(toks, lo, hi)` then `train(toks[hi:...])`): it trains on the next chunk,
        which is scored only later (pre-eval TTT one chunk ahead)."""
        start = self._window(f, via)[0] if via is not None else None
        if start is None:
            return False
        scorers = [c for c in f.calls if len(c.chain) > k and c.chain[k][1] is block and c.chain[k][2] < idx
                   and self.scores_val(c, f)]
        return any(_same(start, self._window(f, c)[1]) for c in scorers)

    def _window(self, f: Func, c: CallSite) -> tuple:
        """(start, end) expressions of the validation tokens a call receives: the bounds of a slice
        argument (`toks[lo:hi]`), else the two arguments after the tokens (`score(model, toks, lo, hi)`)."""
        nodes = c.node.args
        if c.implicit_from is not None or c.star >= 0:
            return None, None
        for i, dep in enumerate(c.args):
            if not self.is_val(f, self.labels(dep, f)):
                continue
            a = nodes[i]
            if isinstance(a, ast.Subscript) and isinstance(a.slice, ast.Slice):
                return a.slice.lower, a.slice.upper
            if len(nodes) > i + 2:
                return nodes[i + 1], nodes[i + 2]
        return None, None

    def _called_in_loop(self, c: CallSite, seen: frozenset) -> bool:
        if any(isinstance(owner, LOOPS) for owner, _, _ in c.chain):
            return True
        f = c.func
        if f.name == "<module>":
            return False
        callers = [x for x in f.callers if x.func is not f]
        if not callers or f in seen or len(seen) > 8:
            return not callers
        return all(self._called_in_loop(x, seen | {f}) for x in callers)

    def log_prefixes(self, names) -> set[str]:
        """`ttt_sliding:`-style prefixes of the lines the named functions print: if a log holds such a
        line, the function ran."""
        out = set()
        for name in names:
            for f in self.by_name.get(name, ()):
                for c in f.calls:
                    if c.method or c.name not in LOGGING:
                        continue
                    for n in ast.walk(c.node):
                        if isinstance(n, ast.Constant) and isinstance(n.value, str):
                            m = _LOG_PREFIX.match(n.value)
                            if m:
                                out.add(m.group(1))
        return out

    def gates(self, f: Func, chain: tuple) -> list[tuple[str, object]]:
        """(key, default) of the flags tested by the `if` statements around a point: `h.ttt_enabled`,
        or a local flag and what it is made of (`use_slot = getattr(args, "slot_enabled", False)`).
        The default is the getattr fallback or the environment default of the key's definition
        (`ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))`), else None."""
        out = []
        for owner, block, _ in chain:
            if not (isinstance(owner, ast.If) and block is owner.body):
                continue
            for x in _flags(owner.test):
                if x in _GENERIC or x in _RUNTIME:
                    continue
                out.append((x, self.default_of(x)))
                for d in f.all_defs.get(x, ()):
                    src = d.src
                    value = getattr(src, "value", None) if isinstance(src, (ast.Assign, ast.AnnAssign)) else None
                    if value is None:
                        continue
                    for n in ast.walk(value):
                        if (isinstance(n, ast.Call) and _name_of(n.func) == "getattr" and len(n.args) == 3
                                and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str)):
                            default = n.args[2].value if isinstance(n.args[2], ast.Constant) else self.consts.get(
                                _name_of(n.args[2]), None)
                            out.append((n.args[1].value, default if default is not None else self.default_of(
                                n.args[1].value)))
                    out += [(y, self.default_of(y)) for y in _idents(value) if y.isidentifier() and y not in _GENERIC]
        seen, unique = set(), []
        for key, default in out:
            if key not in seen:
                seen.add(key)
                unique.append((key, default))
        return unique

    def default_of(self, key: str):
        """The default of a configuration key from its definition (`os.environ.get("X", "0")`), or None."""
        return self.config_of(key)[0]

    def config_of(self, key: str) -> tuple[object, str | None]:
        """(default, environment variable) of a configuration key defined as `key = ...os.environ.get(
        "ENV", default)...` (a class attribute, a module constant or a local flag); (None, None) when
        unknown. Class and module definitions come first."""
        scopes = sorted(self.funcs, key=lambda g: not (g.name.startswith("<class ") or g.name == "<module>"))
        for f in scopes:
            config_scope = f.name.startswith("<class ") or f.name == "<module>"
            for d in f.all_defs.get(key, ()):
                value = getattr(d.src, "value", None)
                if value is None:
                    continue
                for n in ast.walk(value):
                    if isinstance(n, ast.Call) and _name_of(n.func) in ("get", "getenv") and len(n.args) >= 2:
                        env, arg = n.args[0], n.args[1]
                        if isinstance(arg, ast.Constant) and isinstance(env, ast.Constant):
                            return arg.value, env.value
                if config_scope and isinstance(value, ast.Constant):  # a local `step = 0` is not a setting
                    return value.value, None
        return None, None

    def _epochs_on_path(self, chain: tuple, path: list) -> bool:
        """An epoch loop around the site, in its function or in a caller on the decisive path."""
        if _epochs(chain):
            return True
        for callee, caller in zip(path, path[1:]):
            for g in self.by_name.get(callee, ()):
                if any(c.func.name == caller and _epochs(c.chain) for c in g.callers):
                    return True
        return False

    def _kind(self, f: Func, b: Site) -> str:
        if _mentions_warmup(f, b.chain):
            return "warmup"
        if f.leaves and any(_optimises_leaf(f, o) for o in f.optimizers):
            return "slot"
        if self._side_module(f, b):
            return "diagnostic"
        return "pre-eval"

    def _side_module(self, f: Func, b: Site) -> bool:
        """The optimiser trains a module created in this function (a probe, a throwaway adapter) and
        nothing is scored after it: the scored model is not what is trained."""
        local = set()
        for name, defs in f.all_defs.items():
            for d in defs:
                value = getattr(d.src, "value", None)
                while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "to":
                    value = value.func.value
                if isinstance(value, ast.Call) and _name_of(value.func)[:1].isupper():
                    local.add(name)
        trained = set()
        for opt in f.optimizers:
            if opt.node.args:
                trained |= {n.id for n in ast.walk(opt.node.args[0]) if isinstance(n, ast.Name)}
        if not trained or not trained <= local:
            return False
        returned = set()
        for dep in f.returns:
            returned |= self.dep_names(dep)
        if trained & returned:  # handed back to the caller, which uses it
            return False
        later = [a for a in f.accums if a.line > b.line and a.nograd and self.is_val(f, self.labels(a.dep, f))]
        later += [c for c in f.calls if c.line > b.line and self.scores_val(c, f)]
        return not later

    def _causal_hint(self, f: Func, b: Site) -> bool:
        names = self.dep_names(b.dep)
        return any(re.search(r"context|ctx|prefix|already|prev_scored", n, re.I) for n in names)

    @staticmethod
    def dep_names(dep: Dep, limit: int = 300) -> set:
        """Variable names an expression is computed from, transitively through definitions."""
        seen: set = set()
        todo = [dep]
        visited_defs: set = set()
        while todo and len(seen) < limit:
            d = todo.pop()
            calls = list(d.calls)
            while calls:
                c = calls.pop()
                todo.extend(x for x in list(c.args) + list(c.kwargs.values()) + ([c.recv] if c.recv else []))
            todo.extend(base for base, _ in d.elems)
            for u in d.uses:
                seen.add(u.name)
                for df in u.defs:
                    if id(df) not in visited_defs:
                        visited_defs.add(id(df))
                        todo.append(df.dep)
        return seen


_CALIB = re.compile(r"calib|hessian|gptq", re.I)
_RUNTIME = frozenset({"world_size", "rank", "local_rank", "distributed", "master_process", "is_main_process",
                      "device", "cuda"})  # set by the launcher, not by the record's configuration


def _flags(test) -> list[str]:
    """The flags whose truth an `if` test needs: `if h.ttt_enabled`, `if use_slot and args.x`,
    `if getattr(args, "slot", False)`. Comparisons and `or` say nothing about one flag being off."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [x for v in test.values for x in _flags(v)]
    if isinstance(test, (ast.Name, ast.Attribute)):
        return [_name_of(test)]
    if isinstance(test, ast.Call) and _name_of(test.func) in ("getattr", "bool", "int"):
        return [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else _name_of(a)
                for a in test.args[:2] if _name_of(a) or isinstance(a, ast.Constant)]
    return []
_LOG_PREFIX = re.compile(r"^([a-z][a-z0-9_]{1,40}):")


def _same(a, b) -> bool:
    return a is not None and b is not None and ast.dump(a) == ast.dump(b)


def _exclusive(chain1: tuple, chain2: tuple) -> bool:
    """The two points sit in different branches of one if/else (or try/except): never both run."""
    for (o1, b1, i1), (o2, b2, i2) in zip(chain1, chain2):
        if o1 is not o2:
            return False
        if b1 is not b2:
            return True
        if i1 != i2:
            return False
    return False


def _model_args(c: CallSite) -> list[str]:
    """Names passed to a call that look like a model (not data, not configuration)."""
    nodes = list(c.node.args) + [kw.value for kw in c.node.keywords]
    if c.implicit_from is not None:
        i = next((k for k, a in enumerate(c.node.args) if isinstance(a, ast.Name) and a.id == c.name), -1)
        nodes = list(c.node.args[i + 1:]) + [kw.value for kw in c.node.keywords]
    return [n.id for n in nodes if isinstance(n, ast.Name) and re.search(r"model|net|lora", n.id, re.I)]


_GENERIC = frozenset({"h", "args", "self", "hp", "hparams", "cfg", "config", "__name__", "__main__", "os", "environ",
                      "get", "getattr", "int", "bool", "float", "str", "len", "isinstance", "any", "all"})


def _union(keyed: list) -> dict:
    """Element labels of several container values merged key by key."""
    out: dict = {}
    for part in keyed:
        for k, m in part.items():
            out[k] = out.get(k, 0) | m
    return out


def _dep_attrs(dep: Dep, out: set) -> None:
    out.update(dep.attrs)
    for base, _ in dep.elems:
        _dep_attrs(base, out)
    for c in dep.calls:
        for sub in list(c.args) + list(c.kwargs.values()) + ([c.recv] if c.recv is not None else []):
            _dep_attrs(sub, out)
    for site in dep.lookups:
        _dep_attrs(site.dep, out)


def _optimises_leaf(f: Func, opt: CallSite) -> bool:
    first = opt.node.args[0] if opt.node.args else None
    if first is None:
        return False
    return bool({n.id for n in ast.walk(first) if isinstance(n, ast.Name)} & f.leaves)


def _idents(node) -> list[str]:
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.append(n.id)
        elif isinstance(n, ast.Attribute):
            out.append(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.append(n.value)
    return out


def _header_idents(node) -> list[str]:
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return _idents(node.target) + _idents(node.iter)
    if isinstance(node, (ast.While, ast.If)):
        return _idents(node.test)
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [x for item in node.items for x in _idents(item.context_expr)]
    return []


def _mentions_warmup(f: Func, chain: tuple) -> bool:
    """A compile warm-up: the function, an enclosing loop/if/with or a statement just before says so."""
    if "warm" in f.name.lower():
        return True
    for owner, block, idx in chain[-3:]:
        if any("warm" in p.lower() for p in _header_idents(owner)):
            return True
        for j in range(max(0, idx - 3), idx):
            if any("warm" in p.lower() for p in _idents(block[j])):
                return True
    return False


def _epochs(chain: tuple) -> bool:
    for owner, _, _ in chain:
        if isinstance(owner, (ast.For, ast.AsyncFor)):
            text = " ".join(_idents(owner.target) + _idents(owner.iter))
            if re.search(r"(?:^|_|\b)ep(?:och)?s?(?:$|_|\b)", text, re.I):
                return True
    return False


def analyse(tree: ast.Module) -> Program:
    prog = Program()
    _Builder(prog).module(tree)
    prog.resolve()
    prog.fix_shapes()
    prog.fix_summaries()
    prog.fix_contexts()
    prog.fix_effects()
    return prog


def analyse_source(text: str) -> Program:
    parsed = parse(text)
    if parsed.tree is None:
        prog = Program()
        prog.problem, prog.problem_line = parsed.problem, parsed.line
        return prog
    return analyse(parsed.tree)
