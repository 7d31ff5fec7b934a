"""The score the submission claims against the scores its seed logs print."""

from __future__ import annotations

from verifier.analysis import close, load_canonical, tolerance
from verifier.checks import check
from verifier.stats import mean


def _fmt(x) -> str:
    return "None" if x is None else f"{float(x):.8f}".rstrip("0").rstrip(".")


@check("status.pending", title="Results pending", severity="info",
       rule="golf-pack writes status 'pending' until the seed logs exist",
       hint="Run the script once per seed, then re-run golf-pack on the folder to fill in the results.",
       description="A golf-pack folder whose submission.json says status 'pending' and that has no logs yet "
                   "gets this info finding instead of errors about missing scores. Pending with logs "
                   "present is a warning (the JSON is stale).")
def status_pending(a, emit):
    if not a.pending:
        return
    if a.folder.logs:
        emit("submission.json says status 'pending' but the folder has logs", severity="warning",
             file=a.claims.file, logs=len(a.folder.logs))
    else:
        emit("no logs yet: scores, sizes and times are not checked", file=a.claims.file)


@check("score.missing", title="Score missing", severity="error",
       rule="README: a record reports val_bpb from the final (post-quantization) evaluation in its logs",
       hint="Keep the full log of every seed (with its final_* / quantized_* line) and report val_bpb in submission.json.",
       description="The JSON must report val_bpb, and at least one seed log must print a final score line "
                   "(any family: final_*_roundtrip, sliding window, quantized_*, legal_ttt, TTT LoRA, phased "
                   "TTT, golf_result_json). When no log has one, the finding says whether the JSON figure "
                   "matches a pre-quantization step validation instead.")
def score_missing(a, emit):
    if a.pending and not a.folder.logs:
        return
    c = a.claims
    if c is not None and c.val_bpb is None:
        emit("the submission reports no val_bpb" + (" (status 'pending': re-run golf-pack now that logs exist)"
                                                    if a.pending else ""), file=c.file,
             keys=sorted(k for k in c.data if "bpb" in k.lower())[:10])
    if a.folder.logs and not a.runs:
        evidence = {}
        if c is not None and c.val_bpb is not None:
            for name, s in sorted(a.folder.logs.items()):
                if s.final is None and _step_bpb_match(name, s, c.val_bpb, evidence):
                    break
        msg = "no log prints a final score line"
        if evidence:
            msg += (f"; the JSON's val_bpb {_fmt(c.val_bpb)} matches a training-time validation "
                    f"(step {evidence['step']}) in {evidence['log']}, before quantization")
        emit(msg, logs=sorted(a.folder.logs), **evidence)


def _step_bpb_match(name, summary, claimed, evidence) -> bool:
    val = getattr(summary, "last_step_val", None)
    if val and close(claimed, val[1], 4):
        evidence.update(log=name, step=val[2], step_val_bpb=val[1])
        return True
    return False


def _mean_of(runs, attr):
    vals = [getattr(r.final, attr) for r in runs if r.final is not None and getattr(r.final, attr) is not None]
    decs = [getattr(r.final, "bpb_decimals" if attr == "val_bpb" else "loss_decimals") for r in runs
            if r.final is not None and getattr(r.final, attr) is not None]
    if not vals or len(vals) != len(runs):
        return None, None, vals
    return mean(vals), min(decs), vals


def _alternative_family(a, attr, claimed):
    """A final family present in every seed log whose mean matches the claim (e.g. the sliding-window
    figure when a later TTT line exists)."""
    families = None
    for run in a.runs:
        names = {s.base for s in run.summary.scores if s.kind == "final" and getattr(s, attr) is not None}
        families = names if families is None else families & names
    for fam in sorted(families or ()):
        vals, decs = [], []
        for run in a.runs:
            cands = [s for s in run.summary.scores if s.kind == "final" and s.base == fam and getattr(s, attr) is not None]
            best = max(cands, key=lambda s: (s.bpb_decimals, s.line))
            vals.append(getattr(best, attr))
            decs.append(best.bpb_decimals if attr == "val_bpb" else best.loss_decimals)
        if close(claimed, mean(vals), min(decs)):
            return fam, mean(vals)
    return None, None


@check("score.mean", title="Reported score is not the mean of the seed logs", severity="error",
       rule="README: the record's score is the average over its runs (CHALLENGE: 8 multi-seed records "
            "report one seed's value instead)",
       hint="Report the mean over all seed logs (golf-pack computes it), or remove logs of runs that are not part of the record.",
       description="val_bpb and val_loss in the JSON must equal the mean of the seed logs' final scores, "
                   "within one unit of the JSON's last printed digit plus the logs' rounding. Each seed log "
                   "is the log the JSON names for that seed (or the only/matching log per seed). A claim "
                   "that equals one seed's value, or the mean of another final family that every log "
                   "prints (e.g. sliding window before a later TTT line; warning), is named. For golf-pack "
                   "output, val_bpb_std / val_loss_std must be the seeds' sample standard deviation.")
def score_mean(a, emit):
    c = a.claims
    if c is None or not a.runs:
        return
    if a.strict:
        _check_std(a, emit, c)
    for attr, claimed, key in (("val_bpb", c.val_bpb, c.val_bpb_key), ("val_loss", c.val_loss, c.val_loss_key)):
        if claimed is None:
            continue
        avg, decs, vals = _mean_of(a.runs, attr)
        if avg is None:
            continue
        if close(claimed, avg, decs):
            continue
        if attr == "val_loss":
            bpb_avg, bpb_decs, _ = _mean_of(a.runs, "val_bpb")
            if bpb_avg is not None and close(claimed, bpb_avg, bpb_decs):
                continue  # a bpb value under val_loss: score.units reports it
        per_seed = {str(r.seed if r.seed is not None else r.log): getattr(r.final, attr) for r in a.runs}
        evidence = {key: claimed, "log_mean": round(avg, 8), "tolerance": round(tolerance(claimed, decs), 10),
                    "n_logs": len(vals), "per_seed": per_seed}
        single = [r for r in a.runs if close(claimed, getattr(r.final, attr), getattr(
            r.final, "bpb_decimals" if attr == "val_bpb" else "loss_decimals"))]
        if single and len(a.runs) > 1:
            r = single[0]
            emit(f"{key} {_fmt(claimed)} is seed {r.seed}'s value ({r.log}), not the mean {avg:.8f} of "
                 f"{len(vals)} seed logs", file=c.file, matches_log=r.log, **evidence)
            continue
        fam, fam_mean = _alternative_family(a, attr, claimed)
        if fam:
            emit(f"{key} {_fmt(claimed)} is the mean of the '{fam}' lines ({fam_mean:.8f}), while the last final "
                 f"line of the logs gives {avg:.8f}", file=c.file, severity="warning", family=fam, **evidence)
            continue
        if a.seeds_without_log:
            emit(f"{key} {_fmt(claimed)} cannot be checked: the JSON's seed(s) "
                 f"{', '.join(map(str, sorted(set(a.seeds_without_log))))} have no log, and the {len(vals)} logged "
                 f"seed(s) average {avg:.8f}", file=c.file, severity="warning",
                 seeds_without_log=sorted(set(a.seeds_without_log)), **evidence)
            continue
        emit(f"{key} {_fmt(claimed)} differs from the mean {avg:.8f} of {len(vals)} seed log(s) by "
             f"{abs(float(claimed) - avg):.6f}", file=c.file, **evidence)


def _check_std(a, emit, c) -> None:
    """golf-pack writes the sample standard deviation over seeds; check it (strict profile)."""
    from verifier.stats import stdev

    for attr, key in (("val_bpb", "val_bpb_std"), ("val_loss", "val_loss_std")):
        claimed = c.data.get(key)
        if isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
            continue
        _, decs, vals = _mean_of(a.runs, attr)
        if len(vals) < 2 or decs is None:
            continue
        sd = stdev(vals)
        if abs(float(claimed) - sd) > tolerance(claimed, decs):
            emit(f"{key} {_fmt(claimed)} but the seed logs' sample standard deviation is {sd:.8f}", file=c.file,
                 **{key: claimed, "log_stdev": round(sd, 10), "n_logs": len(vals)})


@check("score.per-seed", title="Per-seed score differs from its log", severity="error",
       rule="README: every figure in submission.json comes from the logs in the folder",
       hint="Copy each seed's figures from its log's final line (golf-pack does this), or ship the log that produced them.",
       description="Each seed_results entry (or seeds/seed_scores pair) must match the final score of the log "
                   "for that seed, within the JSON's printed precision.")
def score_per_seed(a, emit):
    c = a.claims
    if c is None:
        return
    by_seed = {r.seed: r for r in a.runs if r.seed is not None}
    for seed, claim in sorted(c.seed_results.items()):
        run = by_seed.get(seed)
        if run is None or run.final is None or run.how == "json-value":
            continue
        f = run.final
        for attr, claimed, decs in (("val_bpb", claim.val_bpb, f.bpb_decimals), ("val_loss", claim.val_loss, f.loss_decimals)):
            value = getattr(f, attr)
            if claimed is None or value is None or close(claimed, value, decs):
                continue
            emit(f"seed {seed}: {attr} {_fmt(claimed)} but {run.log} prints {_fmt(value)} ({f.family}, line {f.line})",
                 file=c.file, seed=seed, attr=attr, claimed=claimed, log_value=value, log=run.log)


@check("score.units", title="val_loss / val_bpb units look wrong", severity="error",
       rule="CHALLENGE: val_bpb = val_loss / ln 2 * tokens / bytes, a fixed ratio per tokenizer "
            "(known problem: val_loss holding a bpb value)",
       hint="val_loss is nats per token, val_bpb bits per byte; copy both from the same final log line.",
       description="The JSON's val_bpb / val_loss ratio must match the bpb-per-nat ratio of the folder's own "
                   "logs (else the pinned ratio of the tokenizer, else a plausible range) within 2 %; a "
                   "val_loss equal to the logs' mean bpb is named as a bpb value stored under val_loss.")
def score_units(a, emit):
    c = a.claims
    if c is None:
        return
    canonical = load_canonical()
    tol = float(canonical.get("ratio_tolerance", 0.02))
    if c.val_loss is not None and a.runs:
        bpb_avg, bpb_decs, _ = _mean_of(a.runs, "val_bpb")
        loss_avg, loss_decs, _ = _mean_of(a.runs, "val_loss")
        if bpb_avg is not None and close(c.val_loss, bpb_avg, bpb_decs) and not (
                loss_avg is not None and close(c.val_loss, loss_avg, loss_decs)):
            emit(f"{c.val_loss_key} {_fmt(c.val_loss)} equals the logs' mean val_bpb ({bpb_avg:.8f}); the mean "
                 f"val_loss is {_fmt(loss_avg)}", file=c.file, **{c.val_loss_key: c.val_loss},
                 log_mean_bpb=round(bpb_avg, 8), log_mean_loss=round(loss_avg, 8) if loss_avg else None)
            return
    if c.val_loss is None or c.val_bpb is None or float(c.val_loss) <= 0:
        return
    ratio = float(c.val_bpb) / float(c.val_loss)
    expected, source = a.ratio, "the folder's logs"
    if expected is None:
        toks = {r.summary.tokenizer for r in a.runs} | {s.tokenizer for s in a.folder.logs.values()}
        toks.discard(None)
        if len(toks) == 1:
            entry = canonical["tokenizers"].get(next(iter(toks)))
            if entry:
                expected, source = float(entry["bpb_per_nat"]), f"the pinned ratio of {next(iter(toks))}"
    if expected is not None:
        if abs(ratio / expected - 1.0) > tol:
            emit(f"val_bpb/val_loss = {ratio:.5f} but {source} give {expected:.5f}", file=c.file,
                 ratio=round(ratio, 6), expected=round(expected, 6), val_bpb=c.val_bpb, val_loss=c.val_loss)
        return
    lo, hi = canonical.get("plausible_bpb_per_nat", [0.25, 1.6])
    if not lo <= ratio <= hi:
        emit(f"val_bpb/val_loss = {ratio:.5f} is outside the plausible range [{lo}, {hi}] for any tokenizer",
             file=c.file, severity="warning", ratio=round(ratio, 6), val_bpb=c.val_bpb, val_loss=c.val_loss)
