"""Stand-in of Triton for golf-verify's CPU harness (on PYTHONPATH only for scripts that import
triton): kernels can be defined (decorators, constexpr annotations, configs) but not launched. A
script with a PyTorch path for its kernel takes it on CPU; a kernel launched anyway runs its exact
PyTorch twin (triton/_twins.py, matched by name and source) or raises
`not runnable on CPU: Triton kernel <name>`."""

from triton import language

__all__ = ["language", "jit", "autotune", "heuristics", "Config", "cdiv", "next_power_of_2"]

__version__ = "0.0-golf-cpu-stand-in"
NOT_RUNNABLE = "not runnable on CPU: "


def _source_sha(fn) -> str | None:
    import ast
    import hashlib
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    return hashlib.sha256(ast.unparse(tree.body[0]).encode()).hexdigest()


class _Kernel:
    def __init__(self, fn=None, **kwargs):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def _launch(self, *args, **kwargs):
        from triton._twins import TWINS

        known = TWINS.get(self.__name__)
        if known is None:
            raise RuntimeError(f"{NOT_RUNNABLE}Triton kernel {self.__name__} (no PyTorch path taken by the script)")
        if not hasattr(self, "_sha"):
            self._sha = _source_sha(self.fn)
        sha = self._sha
        if sha is None or not sha.startswith(known[0]):
            raise RuntimeError(f"{NOT_RUNNABLE}Triton kernel {self.__name__} differs from the one the harness has a "
                               "PyTorch twin for")
        return known[1](*args, **kwargs)

    def __getitem__(self, grid):
        return self._launch

    run = warmup = __call__ = _launch


def jit(fn=None, **kwargs):
    return _Kernel(fn) if fn is not None else (lambda f: _Kernel(f))


def autotune(*args, **kwargs):
    return lambda fn: fn


def heuristics(*args, **kwargs):
    return lambda fn: fn


class Config:
    def __init__(self, *args, **kwargs):
        self.kwargs = kwargs


def cdiv(a, b):
    return (a + b - 1) // b


def next_power_of_2(n):
    return 1 << max(int(n) - 1, 0).bit_length()


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Kernel(None)
