"""ttt.static follows score-first TTT through helper functions and callbacks."""

from __future__ import annotations

import textwrap

from verifier.checks.ttt import analyse_source

HELPER = '''
def train_epoch(model, val_tokens, lo, hi):
    for i in range(lo, hi, 8):
        loss = model(val_tokens[i:i + 8])
        loss.backward()
'''

SCORE_FIRST = HELPER + '''
def ttt(model, val_tokens, chunks):
    for lo, hi in chunks:
        score_chunk(model, val_tokens, lo, hi)
        train_epoch(model, val_tokens, lo, hi)
'''

CALLBACK = HELPER + '''
def loop(model, val_tokens, chunks, train_chunk):
    for lo, hi in chunks:
        score_windows(model, val_tokens, lo, hi)
        train_chunk(lo, hi)

def ttt(model, val_tokens, chunks):
    def train_chunk(lo, hi):
        for _ in range(3):
            train_epoch(model, val_tokens, lo, hi)
    return loop(model, val_tokens, chunks, train_chunk)
'''

PRE_EVAL = HELPER + '''
def ttt(model, val_tokens, total, epochs):
    for ep in range(epochs):
        train_epoch(model, val_tokens, 0, total)
    return score_all(model, val_tokens)
'''


def kinds(src: str) -> list[str]:
    flags, problem = analyse_source(textwrap.dedent(src))
    assert problem is None
    return [f["kind"] for f in flags]


def test_score_then_train_helper_is_not_flagged():
    assert kinds(SCORE_FIRST) == []


def test_score_first_through_a_callback_is_not_flagged():
    assert kinds(CALLBACK) == []


def test_pre_eval_training_through_a_helper_is_flagged():
    assert kinds(PRE_EVAL) == ["val-training-before-scoring"]


def test_helper_also_called_unscored_is_flagged():
    both = SCORE_FIRST + '''
def warm(model, val_tokens):
    train_epoch(model, val_tokens, 0, 64)
'''
    assert kinds(both) == ["val-training-before-scoring"]
