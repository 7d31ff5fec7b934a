"""Training and evaluation wall-clock limits of the 10-minute track, and its hardware."""

from __future__ import annotations

from verifier.checks import check

LIMIT_S = 600.0
TRAIN_TOLERANCE_MS = 1000.0  # the wall-clock check runs after a step; one step may overshoot
EVAL_TOLERANCE_S = 1.0


def _train_facts(a, run):
    ms, src = a.companion_value(run, "train_time_ms")
    return ms, src


@check("time.train", title="Training over 600 s", severity="error",
       rule="README: training <= 600 s on 8xH100; threads #1950/#1956: work after the stop that still "
            "uses training data (GPTQ calibration) counts as training",
       hint="Lower MAX_WALLCLOCK_SECONDS or reserve time for post-training calibration (e.g. GPTQ_RESERVE_SECONDS) so it ends within 600 s.",
       description="For the 10-minute track, each seed's training time (the stop line `stopping_early: "
                   "wallclock_cap train_time:...`, else the last step line, else golf_result_json) must be "
                   "at most 600 s plus a stated tolerance of 1 s (the wall-clock check runs between steps). "
                   "Hessian/calibration passes on training data after the stop are added (warning when "
                   "only they push it over); a post-stop phase on self-generated data is reported as info.")
def train_time(a, emit):
    if not a.record_track:
        a.skip("time.train", f"track {a.track}: no training-time limit")
        return
    limit_ms = LIMIT_S * 1000.0
    for run in a.runs:
        ms, src = _train_facts(a, run)
        if ms is None:
            if not run.summary.eval_only:
                emit("no training time in the log", file=run.log, severity="info")
            continue
        s = a.folder.logs[src]
        if ms > limit_ms + TRAIN_TOLERANCE_MS:
            emit(f"trained {ms / 1000:.3f} s (> {LIMIT_S:.0f} s + {TRAIN_TOLERANCE_MS / 1000:g} s tolerance)",
                 file=src, line=s.stop_line, train_time_ms=ms, source=s.train_time_source, seed=run.seed)
            continue
        extra = s.post_stop_calibration_s
        if extra and s.post_stop_calibration_source == "training":
            total = ms + extra * 1000.0
            if total > limit_ms + TRAIN_TOLERANCE_MS:
                emit(f"training stopped at {ms / 1000:.3f} s, then calibration on training data took "
                     f"{extra:.1f} s more: {total / 1000:.3f} s in all", file=src, line=s.stop_line,
                     severity="warning", train_time_ms=ms, post_stop_calibration_s=extra,
                     total_s=round(total / 1000, 3), gptq_reserve_ms=s.gptq_reserve_ms, seed=run.seed)
        elif s.post_stop_elapsed_s and s.post_stop_elapsed_s > LIMIT_S:
            emit(f"post-training quantization ended at {s.post_stop_elapsed_s:.1f} s; its calibration data is "
                 f"{s.post_stop_calibration_source or 'unknown'}", file=src, severity="info",
                 post_stop_elapsed_s=s.post_stop_elapsed_s, calibration=s.post_stop_calibration_source,
                 seed=run.seed)
    for name, s in a.other_logs():
        if s.train_time_ms is not None and s.train_time_ms > limit_ms + TRAIN_TOLERANCE_MS:
            emit(f"trained {s.train_time_ms / 1000:.3f} s (> {LIMIT_S:.0f} s) in a log not counted for any seed",
                 file=name, line=s.stop_line, severity="warning", train_time_ms=s.train_time_ms, seed=s.seed,
                 counted=False)


@check("time.eval", title="Evaluation over 600 s", severity="error",
       rule="README: evaluation <= 600 s on 8xH100, separately from training; CHALLENGE: end-to-end "
            "(artifact written -> final score) has exceeded 600 s while the script's eval_time said 500 s",
       hint="Speed up evaluation (fewer TTT epochs, larger batches) or move compile warm-up out of the timed phase only if it is within the budget too.",
       description="For the 10-minute track, the evaluation time the script reports (total_eval_time, else "
                   "the sum of the eval_time of its final lines) must be at most 600 s (error). The "
                   "end-to-end time from the artifact line to the final score (timestamps when the log has "
                   "them, else the sum of every eval after the artifact including diagnostics and compile "
                   "warm-up) over 600 s is a warning.")
def eval_time(a, emit):
    if not a.record_track:
        a.skip("time.eval", f"track {a.track}: no evaluation-time limit")
        return
    for run in a.runs:
        s = run.summary
        if s.eval_timed_s is not None and s.eval_timed_s > LIMIT_S + EVAL_TOLERANCE_S:
            emit(f"the script reports {s.eval_timed_s:.1f} s of evaluation (> {LIMIT_S:.0f} s)", file=run.log,
                 line=s.final.line if s.final else None, eval_time_s=s.eval_timed_s, seed=run.seed)
        elif s.eval_end_to_end_s is not None and s.eval_end_to_end_s > LIMIT_S + EVAL_TOLERANCE_S:
            how = ("from the log's timestamps" if s.eval_end_to_end_method == "timestamps"
                   else "summing every eval after the artifact, diagnostics and compile warm-up included")
            emit(f"end-to-end evaluation took {s.eval_end_to_end_s:.1f} s ({how}); the script's own timer says "
                 f"{s.eval_timed_s or 0:.1f} s", file=run.log, line=s.final.line if s.final else None,
                 severity="warning", end_to_end_s=s.eval_end_to_end_s, method=s.eval_end_to_end_method,
                 script_eval_s=s.eval_timed_s, compile_warmup_s=s.compile_warmup_s, seed=run.seed)
    for name, s in a.other_logs():
        if s.final is not None and s.eval_timed_s is not None and s.eval_timed_s > LIMIT_S + EVAL_TOLERANCE_S:
            emit(f"the script reports {s.eval_timed_s:.1f} s of evaluation (> {LIMIT_S:.0f} s) in a log not counted "
                 f"for any seed", file=name, line=s.final.line, severity="warning", eval_time_s=s.eval_timed_s,
                 seed=s.seed, counted=False)


@check("hardware.track", title="Not the track's hardware", severity="warning",
       rule="README: the 10-minute track is timed on 8xH100 (SXM)",
       hint="Run the record on 8xH100, or submit it to the non-record track.",
       description="For the 10-minute track, a seed log that shows a world size other than 8 or GPUs other "
                   "than H100 (nvidia-smi table, golf_result_json device) is reported.")
def hardware(a, emit):
    if not a.record_track:
        return
    logs = [(run.log, run.summary, run.seed, None) for run in a.runs]
    logs += [(name, s, s.seed, "info") for name, s in a.other_logs() if s.final is not None]
    for log, s, seed, sev in logs:
        names = set(s.gpus)
        if s.device:
            names.add(s.device)
        bad = sorted(n for n in names if "H100" not in n and n.lower() != "cpu")
        note = " (a log not counted for any seed)" if sev else ""
        if s.world_size is not None and s.world_size != 8:
            emit(f"world size {s.world_size}, not 8{note}", file=log, severity=sev, world_size=s.world_size, seed=seed)
        elif bad:
            emit(f"the log shows {', '.join(bad)}, not H100{note}", file=log, severity=sev, gpus=bad, seed=seed)
        elif s.device and s.device.lower().startswith("cpu"):
            emit(f"the run was on CPU{note}", file=log, severity=sev, device=s.device, seed=seed)
