"""Evaluation legality beyond training on unscored tokens (thread #1017, C1-C4): n-gram caches keyed
on the target, unnormalized mixtures, re-scoring after adaptation, calibration on validation data,
partial validation coverage, and training data that overlaps the validation set. Read from the
script's validation-data model (verifier.codeflow), the shipped data-preparation scripts and the
logs; nothing is executed."""

from __future__ import annotations

import ast
import re

from verifier.analysis import load_canonical
from verifier.checks import check
from verifier.checks.ttt import not_checked, site_severity, where
from verifier.codeflow import K, P, R

_FINAL = re.compile(r"^(?:final|quantized|legal_ttt|ttt_final)", re.I)


def _programs(a):
    for name, info in a.programs():
        prog = info.program
        if prog is not None and not prog.problem:
            yield name, info, prog


@check("legal.ngram-target", title="N-gram cache keyed on the target token", severity="error",
       rule="Thread #1017 C1 (the distribution at t may not depend on x_t) and C2; PR #779 ruling: hashed "
            "n-gram caches that look up the target token to mix probabilities leak it (#797, #776, #702); "
            "thread #886 (the blend sums to ~277)",
       hint="Look up the n-gram table with the context only and score the full normalized distribution over "
            "the vocabulary (a tilt of the model's softmax, renormalized), never a count read for the target.",
       description="A hash that mixes the token at a position with the tokens before it (A[i] XOR f(A[i-k]), "
                   "or a target y XORed into a context hash) indexes a table whose value then enters a "
                   "probability (a division or a (1-a)*p + a*q blend) during evaluation: the score reads a "
                   "count for the target token only. Updates keyed that way after scoring (np.add.at, +=) are "
                   "legal and not reported. Fires on rejected PRs #702, #776, #779, #797, #860 and #1322; no "
                   "merged record (the merged token tilt of 2026-04-09_A2_Muon097_3Seed reads a context-only hint "
                   "and renormalizes).")
def ngram_target(a, emit):
    if not_checked(a, "legal.ngram-target"):
        return
    for name, info, prog in _programs(a):
        for f in prog.funcs:
            hits = [d for d in f.divisions + f.blends if prog.labels(d.dep, f) & P and prog.is_val(f, prog.labels(d.dep, f))]
            keyed = [site for site in f.lookups if prog.labels(site.dep, f) & K]
            if not hits or not keyed:
                continue
            first = min(keyed, key=lambda s: s.line)
            line, loc = where(info, first.line)
            emit(f"{f.name} reads a table at a key that includes the token being scored{loc}, and uses the "
                 f"count as a probability (line {hits[0].line})", file=name, line=line, function=f.name,
                 lookup_line=first.line, probability_line=hits[0].line)


@check("legal.mixture", title="Mixture not normalized over the vocabulary", severity="warning",
       rule="Thread #1017 C2: a full distribution over the vocabulary that sums to 1; thread #886: a blend "
            "(1-a)*p_model + a*P(cache) computed for the target only summed to ~277",
       hint="Mix full distributions (model softmax and a normalized n-gram distribution over every token) and "
            "score the target's probability in the mixture, or renormalize a tilt explicitly.",
       description="A blend (1-a)*x + a*y on validation data where one side is a ratio of two table lookups "
                   "(count / count) computed for one token: a warning (the distribution it implies need not sum "
                   "to 1); an error when the count is keyed on the target (then legal.ngram-target fires as "
                   "well). Fires on rejected PRs #702, #776, #779, #797, #1322 (error) and #330, #972 (warning); no "
                   "merged record.")
def mixture(a, emit):
    if not_checked(a, "legal.mixture"):
        return
    for name, info, prog in _programs(a):
        for f in prog.funcs:
            for b in f.blends:
                m = prog.labels(b.dep, f)
                if not (m & (P | R)) or not prog.is_val(f, m):
                    continue
                line, loc = where(info, b.line)
                keyed = bool(m & P)
                emit(f"{f.name} blends a probability with a count ratio computed for one token{loc}"
                     + (", counted at a key that includes the target" if keyed else ""),
                     file=name, line=line, severity="error" if keyed else None, function=f.name, target_keyed=keyed)
                break


def _trainer_active(a, prog, c1) -> bool:
    """Does the adapting call really adapt: a training path it reaches that is not a warm-up or a
    diagnostic, is reached with validation data, and is not switched off?"""
    names = {g.name for g in c1.targets}
    for site in prog.val_training():
        if names & set(site.path) and site.kind not in ("warmup", "diagnostic") and site.scored_first is not None:
            if a.path_state(site.gates, prog)[0] not in ("off", "default-off"):
                return True
    return False


@check("legal.rescore", title="Validation scored again after adapting on it", severity="error",
       rule="Thread #1017 C4 (single pass: each token is scored once); PR #991 (reported the score of a second "
            "pass after TTT; closed, resubmitted as #1004 with the first pass only)",
       hint="Report the score accumulated during the score-first pass; do not evaluate the adapted model on the "
            "validation set again.",
       description="A call that trains a model on validation data (score-first TTT included) is followed, on "
                   "the same model and not in another branch, by a call that scores validation data again: an "
                   "error when that second score is logged as a final line (final_*, quantized_*, legal_ttt*), "
                   "a warning for a diagnostic re-evaluation. Dormant or diagnostic-only training is not "
                   "counted; training with no first scoring pass is ttt.static's (pre-eval TTT). Fires on "
                   "rejected PRs #991, #1229 and #297 (error) and #1128 (diagnostic pass, warning); no merged "
                   "record.")
def rescore(a, emit):
    if not_checked(a, "legal.rescore"):
        return
    for name, info, prog in _programs(a):
        for f, c1, c2, model in prog.rescoring():
            if not _trainer_active(a, prog, c1):
                continue
            labels = [s for s in prog.strings_near(f, c2.line) if "val" in s or _FINAL.match(s.strip())]
            final = next((s.strip().split()[0] for s in labels if _FINAL.match(s.strip())), None)
            line, loc = where(info, c2.line)
            emit(f"{c2.name} scores validation data again with {model} after {c1.name} (line {c1.line}) trained "
                 f"it on validation data{loc}" + (f"; reported as {final}" if final else " (a diagnostic)"),
                 file=name, line=line, severity=None if final else "warning", function=f.name, model=model,
                 adapted_by=c1.name, rescored_by=c2.name, reported_as=final)


@check("legal.val-calibration", title="Calibration or training reads validation data", severity="error",
       rule="README: validation data may never be trained on before it is scored; GPTQ/Hessian calibration is "
            "part of producing the artifact (threads #1950/#1956), so it may not see validation data",
       hint="Calibrate on training data within the training budget, or on self-generated sequences.",
       description="A calibration routine (a function named like calib/hessian/gptq) is called with validation "
                   "data, or loads validation data itself. Dormant paths (flag off in the logs or by default) "
                   "are warnings. Fires on rejected PRs #330 (its README runs GPTQ_ENABLED=1) and #1329; not on "
                   "2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072, which calibrates on self-generated tokens "
                   "despite its name.")
def val_calibration(a, emit):
    if not_checked(a, "legal.val-calibration"):
        return
    for name, info, prog in _programs(a):
        for f, lineno, callee in prog.calibration_reads():
            call = next((c for c in f.calls if c.line == lineno), None)
            gates = prog.gates(f, call.chain) if call is not None else []
            state, why = a.path_state(gates, prog)
            line, loc = where(info, lineno)
            note = {"off": f"; dormant: {why}", "default-off": f"; dormant: {why}", "on": f"; it ran: {why}"}
            emit(f"{callee} is given validation data in {f.name}{loc}" + note.get(state, ""), file=name, line=line,
                 severity="warning" if state in ("off", "default-off") else None, function=f.name, callee=callee)


@check("legal.partial-val", title="Final score on part of the validation set", severity="error",
       rule="README: scored on the fixed FineWeb validation split (all of it); a score on a subset is not "
            "comparable",
       hint="Evaluate the final score on every validation token (drop the batch or token limit for the final "
            "evaluation).",
       description="The log says the evaluation was limited (`eval: N batches (limited)`) before its final "
                   "score line, or the validation loader keeps only a prefix by default (a VAL_MAX_TOKENS / "
                   "VAL_MAX_BATCHES-style setting with a non-zero default) and the log prints fewer validation "
                   "tokens than the canonical count. Error on the 10-minute track, warning on the non-record "
                   "track. Fires on merged non-record 2026-03-31_LegendreGPT (eval: 500 batches (limited)).")
def partial_val(a, emit):
    sev = None if a.record_track else "warning"
    logs = [(run.log, run.summary, sev, "") for run in a.runs]
    logs += [(name, s, "warning", " (a log not counted for any seed)") for name, s in a.other_logs()]
    for name, s, severity, note in logs:
        limited = [ln for ln in s.partial_eval_lines if s.final is not None and ln < s.final.line]
        if limited:
            emit(f"the log limits the evaluation before its final score (line {limited[-1]}: a subset of the "
                 f"validation set){note}", file=name, line=limited[-1], severity=severity, seed=s.seed,
                 final_line=s.final.line)


_VAL_DOCS_ARG = re.compile(r"val[_-]?docs", re.I)


def _prep_val_docs(info) -> tuple[int, int] | None:
    """(default number of validation documents, line) a data-preparation script uses, if it writes
    training shards after its own validation split."""
    text = info.text or ""
    if "train" not in text or "val" not in text or ".bin" not in text:
        return None
    parsed = info.parsed
    tree = parsed.tree if parsed is not None else None
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and _VAL_DOCS_ARG.search(node.args[0].value):
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, int):
                    return kw.value.value, node.lineno
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and _VAL_DOCS_ARG.search(node.targets[0].id) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, int):
            return node.value.value, node.lineno
    return None


@check("legal.train-val-overlap", title="Training data overlaps the validation set", severity="error",
       rule="README: validation data may never be trained on; issue #2127 (prepare_caseops_data.py's default "
            "--val-docs=10000 puts documents 10,000-49,999 of the validation set into training); PR #2146 "
            "excluded the records whose logs show it (train_shards: 1499 beside the full validation set)",
       hint="Build the data with the canonical split (all 50,000 validation documents held out), or download the "
            "canonical shards; fix the data-preparation default.",
       description="From the logs: a training-shard count that only a leaky local preparation produces "
                   "(pinned per tokenizer in verifier/canonical.json: train_shards 1499 for sp8192_caseops) "
                   "next to the full validation set: error. From the shipped data-preparation scripts: a "
                   "default validation split smaller than the canonical 50,000 documents with training shards "
                   "written from the documents after it: a warning (the record may have used canonical "
                   "shards; its logs say which). Fires (warning) on the merged CaseOps records from "
                   "2026-04-19 on, whose logs show the canonical train_shards: 80; the error fires on "
                   "rejected PRs #1967 and #2130 (train_shards: 1499), the warning on #2018.")
def train_val_overlap(a, emit):
    canonical = load_canonical()
    tokenizers = canonical["tokenizers"]
    seen = set()
    for name in sorted(a.folder.logs):
        s = a.folder.logs[name]
        entry = tokenizers.get(s.tokenizer or "")
        if s.train_shards is None or not entry:
            continue
        why = entry.get("train_shard_fingerprints", {}).get(str(s.train_shards))
        if why and s.val_tokens == entry.get("val_tokens") and (s.train_shards, s.tokenizer) not in seen:
            seen.add((s.train_shards, s.tokenizer))
            emit(f"train_shards: {s.train_shards} next to the full {s.tokenizer} validation set is {why}",
                 file=name, line=s.train_shards_line, train_shards=s.train_shards, val_tokens=s.val_tokens)
    val_docs = int(canonical.get("val_docs", 50000))
    shards = sorted({s.train_shards for s in a.folder.logs.values() if s.train_shards is not None})
    for rel, info in sorted(a.folder.scripts.items()):
        if rel == a.folder.code_script or info.text is None:
            continue
        found = _prep_val_docs(info)
        if found is None or found[0] >= val_docs:
            continue
        default, lineno = found
        logs = f"; the logs show train_shards: {', '.join(map(str, shards))}" if shards else ""
        emit(f"{rel} defaults to {default:,} validation documents and writes the documents after them as "
             f"training shards: documents {default:,}-{val_docs - 1:,} of the {val_docs:,}-document validation "
             f"set would be trained on (issue #2127){logs}", file=rel, line=lineno, severity="warning",
             default_val_docs=default, canonical_val_docs=val_docs, logged_train_shards=shards)
