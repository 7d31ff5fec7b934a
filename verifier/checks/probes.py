"""Legality probes: the four checks that `golf-verify --probe` adds by running the script on CPU
(verifier/probes.py). Without --probe there is no probe result and these checks report nothing."""

from __future__ import annotations

from verifier.checks import check

_RULE = ("README: only test-time train on validation tokens already evaluated; thread #1017 (C1 causal, "
         "C2 normalized, C3 score before update, C4 single pass)")
_HOW = ("Runs only with --probe: a copy of the folder is trained and evaluated on CPU on a tiny dataset with small "
        "overrides (verifier.probes.SMOKE_OVERRIDES), in subprocesses with a time limit, without GPU or hub "
        "access, three times: A with the validation split as given, B identical up to a position P (60% of the "
        "targets, off TTT chunk boundaries) and changed after it, C changed everywhere and shorter. The script's "
        "probe ledger (GOLF_PROBE_DIR, written by golf-pack scripts) records every scored token's NLL, every TTT "
        "optimizer step's tokens and full log-prob vectors at sampled positions; a script that writes none is "
        "reported as not checked.")


def _report(probe_id: str, a, emit) -> None:
    result = getattr(a, "probe", None)
    if result is not None:
        result.emit(probe_id, emit, a)


@check("probe.causality", title="Causality probe (C1/C3)", severity="error",
       rule=_RULE + "; C1: the distribution at position t depends only on the artifact and tokens before t",
       hint="Score every token before any update that used it: score a chunk under inference mode, then train "
            "on it; never train on validation tokens before scoring them (pre-eval TTT, thread #677).",
       description=_HOW + " The per-token NLL of positions 1..P of every ledgered eval path must be bit-identical "
                          "in A and B; the finding names the eval path and the first position that differs.")
def probe_causality(a, emit):
    _report("probe.causality", a, emit)


@check("probe.ledger", title="Score-before-update ledger probe (C3/C4)", severity="error",
       rule=_RULE + "; C3: a token's score is fixed before any update that saw it; C4: each token is scored once",
       hint="Train only on chunks every rank has scored, never on a chunk before scoring it, and score each "
            "validation token exactly once per evaluation (no re-scoring after adaptation, thread #991).",
       description=_HOW + " From run A's ledgers (all ranks): every token a TTT step reads inside its scope was "
                          "scored earlier in the same eval path by some rank (token 0, context only, is exempt), "
                          "and every token is scored exactly once per eval path. The finding names the eval path, "
                          "the step, the rank and the first offending position.")
def probe_ledger(a, emit):
    _report("probe.ledger", a, emit)


@check("probe.normalization", title="Normalization probe (C2)", severity="error",
       rule=_RULE + "; C2: a full distribution over the vocabulary that sums to 1 (thread #886)",
       hint="Score with a softmax over the whole vocabulary; a cache or mixture must renormalize over every token, "
            "not only the correct one.",
       description=_HOW + " Every log-prob vector recorded at the sampled positions of run A must satisfy "
                          "|sum(exp(logprob)) - 1| <= 1e-4, with finite values and one length per eval path.")
def probe_normalization(a, emit):
    _report("probe.normalization", a, emit)


@check("probe.isolation", title="Validation isolation probe", severity="error",
       rule="README: validation data may never be trained on before it is scored; no validation data in "
            "training (train/validation overlap, thread #2146)",
       hint="Read only fineweb_train_* shards during training, warm-up and calibration; load the validation "
            "split for evaluation only.",
       description=_HOW + " The exported artifact (final_model.* in LOG_DIR or beside the script) must be "
                          "byte-identical (sha256) in A, B and C, whose training data and seed are identical. "
                          "On a difference run A is repeated, to tell a leak from training that is not "
                          "deterministic on CPU (then the probe is undecided).")
def probe_isolation(a, emit):
    _report("probe.isolation", a, emit)
