"""Loaded by every Python process started with this folder on PYTHONPATH (golf-verify's CPU harness).

It turns the harness on only in torchrun's workers (LOCAL_RANK is set) of a run that asked for it
(GOLF_HARNESS=1): the launcher, the workers' own child processes and unrelated processes are left
alone. A sitecustomize that this one
shadows (a distribution's own) is still run."""

import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        path = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.abspath(entry or ".") != here and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                exec(compile(fh.read(), path, "exec"), {"__name__": "sitecustomize", "__file__": path})
            return


_chain()
# A worker's own child processes (a script running a tool such as pyminify) are left alone: the
# worker marks the environment it passes on with its process id.
_owner = os.environ.get("_GOLF_HARNESS_OWNER")
if os.environ.get("GOLF_HARNESS") == "1" and "LOCAL_RANK" in os.environ and _owner in (None, str(os.getpid())):
    import _golf_cpu

    _golf_cpu.install()
