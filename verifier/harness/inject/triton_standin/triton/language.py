"""Stand-in of triton.language: names exist (for annotations and defaults); nothing computes."""


class _Anything:
    def __init__(self, name="tl"):
        self._name = name

    def __getattr__(self, name):
        return _Anything(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        return _Anything(self._name)

    def __getitem__(self, item):
        return _Anything(self._name)

    def __repr__(self):
        return self._name


constexpr = _Anything("constexpr")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Anything(f"tl.{name}")
