"""Shared helpers for the model and optimizer tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from packager.hparams import resolve
from packager.runtime import docattn as D
from packager.runtime import frontier as FR
from packager.runtime import kernels as K
from packager.runtime import model as M
from packager.runtime import optim as O

# Schedules read these; they are declared in train.py, not in model/optim.
TRAIN_DEFAULTS = dict(iterations=20000, warmdown_iters=1200, max_wallclock_seconds=600.0, train_seq_len=1024)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead, and stall badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_optim_args(**overrides) -> SimpleNamespace:
    """Declared defaults of every model and optimizer HP, vocab 1024, train values, overrides."""
    values = resolve(None, M.HPARAMS + O.HPARAMS + FR.HPARAMS + D.HPARAMS + K.HPARAMS)
    values.update(vocab_size=1024, **TRAIN_DEFAULTS)
    values.update(overrides)
    return SimpleNamespace(**values)
