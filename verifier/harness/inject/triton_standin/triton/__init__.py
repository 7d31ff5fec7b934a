"""Stand-in of Triton for golf-verify's CPU harness (on PYTHONPATH only for scripts that import
triton): kernels can be defined (decorators, constexpr annotations, configs) but not launched. A
script with a PyTorch path for its kernel takes it on CPU; launching a kernel raises
`not runnable on CPU: Triton kernel <name>`."""

from triton import language  # noqa: F401

__version__ = "0.0-golf-cpu-stand-in"
NOT_RUNNABLE = "not runnable on CPU: "


class _Kernel:
    def __init__(self, fn=None, **kwargs):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def _refuse(self, *args, **kwargs):
        raise RuntimeError(f"{NOT_RUNNABLE}Triton kernel {self.__name__} (no PyTorch path taken by the script)")

    def __getitem__(self, grid):
        return self._refuse

    run = warmup = __call__ = _refuse


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
