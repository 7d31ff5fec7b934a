"""Legality probes: the four checks that `golf-verify --probe` adds by running the script on CPU under
the harness (verifier/probes.py, verifier/harness). Without --probe there is no probe result and these
checks report nothing."""

from __future__ import annotations

from verifier.checks import check

_RULE = ("README: only test-time train on validation tokens already evaluated; thread #1017 (C1 causal, "
         "C2 normalized, C3 score before update, C4 single pass)")
_HOW = ("Runs only with --probe: the script runs unmodified on CPU under golf-verify's harness (CPU shims and "
        "score capture injected from outside; copies of the folder, subprocesses with a time limit, offline) "
        "with the record's run configuration shrunk to a tiny model, three times on random validation tokens of "
        "its own vocabulary: A; B identical to A before a position P (60% of the targets, inside a TTT chunk) "
        "and different from P on; C shorter and different everywhere. Every score computed through "
        "F.cross_entropy, F.nll_loss or a gather of a log_softmax is captured (target, NLL, a fingerprint of the "
        "distribution) and placed at its validation position by its row's window; calls are grouped by the "
        "printed val_loss line they feed. A probe that cannot decide reports `not checked: <reason>` as an error, "
        "never a pass.")


def _report(probe_id: str, a, emit) -> None:
    result = getattr(a, "probe", None)
    if result is not None:
        result.emit(probe_id, emit, a)


@check("probe.causality", title="Causality probe (C1/C3)", severity="error",
       rule=_RULE + "; C1: the distribution at position t depends only on the artifact and tokens before t",
       hint="Score every token before any update that used it: score a chunk under inference mode, then train "
            "on it; never train on validation tokens before scoring them (pre-eval TTT, thread #677), never fit "
            "a delta to the targets being scored (SLOT), never read the target into its own distribution.",
       description=_HOW + " The reported score of every position before P (per printed line: each token's first "
                          "captured computation, or the computation whose mean is the printed figure) must be "
                          "bit-identical in A and B if it was computed before any token from P on was scored (a "
                          "score may depend on tokens already scored: test-time training in any order), and so "
                          "must the distribution predicting P (its target changed, its context did not: a "
                          "difference is a target-keyed cache or bias). The finding names the printed line, the "
                          "first position that differs and the call (file:line).")
def probe_causality(a, emit):
    _report("probe.causality", a, emit)


@check("probe.single-pass", title="Single-pass probe (C3/C4)", severity="error",
       rule=_RULE + "; C3: a token's score is fixed before any update that saw it; C4: each token is scored once",
       hint="Report the mean of each token's first score: score once, before any update that saw the token "
            "(no re-scoring after adaptation, thread #991; no compile warm-up stepping on validation tokens, "
            "#1530).",
       description=_HOW + " Each printed val_loss must equal, within its printed precision, the mean over its "
                          "tokens of each token's first captured score. Otherwise the finding names the first "
                          "token whose first computation (a training step's forward, or a score before an update) "
                          "differs from the one reported, and says whether the figure is the mean of the "
                          "re-computed scores (re-scoring).")
def probe_single_pass(a, emit):
    _report("probe.single-pass", a, emit)


@check("probe.normalization", title="Normalization probe (C2)", severity="error",
       rule=_RULE + "; C2: a full distribution over the vocabulary that sums to 1 (thread #886)",
       hint="Score with a softmax over the whole vocabulary; a cache or mixture must renormalize over every token, "
            "not only the correct one.",
       description=_HOW + " Scores through cross_entropy are normalized by its softmax; log-prob rows (nll_loss, a "
                          "gathered log_softmax) must satisfy |logsumexp| <= 1e-4, and every distribution must span "
                          "the tokenizer's whole vocabulary. The finding names the printed line and the first "
                          "position.")
def probe_normalization(a, emit):
    _report("probe.normalization", a, emit)


@check("probe.isolation", title="Validation isolation probe", severity="error",
       rule="README: validation data may never be trained on before it is scored; no validation data in "
            "training (train/validation overlap, thread #2146)",
       hint="Read only fineweb_train_* shards during training, warm-up and calibration; load the validation "
            "split for evaluation only.",
       description=_HOW + " The model files the script exports beside itself must be byte-identical (sha256) in "
                          "A, B and C, whose training data and seed are identical. On a difference run A is "
                          "repeated, to tell a leak from training that is not deterministic on CPU (then the "
                          "probe is not checked).")
def probe_isolation(a, emit):
    _report("probe.isolation", a, emit)
