"""Findings of `golf-verify FOLDER --rerun`: did each seed finish, reproduce its claimed score, on
the track's hardware, within the time limits as measured from outside the script?

These checks only speak when the analysis carries a rerun (`analysis.rerun`, set by
verifier.rerun); a static `golf-verify FOLDER` never runs code and gets no finding from them."""

from __future__ import annotations

import re

from verifier.checks import check

EVAL_LIMIT_S = 600.0
EVAL_TOLERANCE_S = 1.0
TRACK_HARDWARE = "8xH100 SXM"


def _rerun(a):
    return getattr(a, "rerun", None)


def _fmt(x) -> str:
    return "-" if x is None else f"{float(x):.8f}".rstrip("0").rstrip(".")


def is_track_hardware(world_size: int | None, names: list[str]) -> bool | None:
    """8 H100 SXM GPUs (torch names them 'NVIDIA H100 80GB HBM3'; PCIe and NVL boards say so)."""
    if world_size is None and not names:
        return None
    if world_size is not None and world_size != 8:
        return False
    if not names:
        return None
    return all("H100" in n and "PCIE" not in n.upper() and "NVL" not in n.upper() for n in names)


@check("rerun.isolation", title="Rerun isolation", severity="error",
       rule="CHALLENGE: no network during a run; golf-verify --rerun never changes the record folder "
            "except for the new verify/<timestamp>/ subfolder",
       hint="Find what the script writes outside its own folder (absolute paths) and remove it.",
       description="`--rerun` runs each seed in a temporary copy of the folder with the offline variables "
                   "of the Hugging Face libraries set, proxies unset and, where the machine allows it, in a "
                   "network namespace of its own (`unshare -n`, loopback only). Where no namespace can be "
                   "made the run goes on and an info finding says why. Every file of the record folder is "
                   "hashed before and after the rerun; any change outside verify/<timestamp>/ is an error.")
def isolation(a, emit):
    r = _rerun(a)
    if r is None:
        return
    if r.network_note:
        emit(f"ran without a network namespace: {r.network_note}", severity="info", network=r.network)
    for rel in r.folder_changes:
        emit(f"the record folder changed during the rerun: {rel}", file=rel)


@check("rerun.timeout", title="Rerun killed at its timeout", severity="error",
       rule="README: training <= 600 s and evaluation <= 600 s on 8xH100; golf-verify --rerun gives each "
            "seed a hard timeout (--timeout)",
       hint="Check the partial log saved under verify/<timestamp>/ for where it stalled; raise --timeout only "
            "if the hardware is slower than the track's.",
       description="A seed whose run outlives `--timeout` is killed (its whole process group). The finding "
                   "names the phase it reached (startup, warmup, training step k, export, or the eval path "
                   "it was scoring) from the lines it printed, and the partial log is kept in "
                   "verify/<timestamp>/.")
def timeout(a, emit):
    r = _rerun(a)
    if r is None:
        return
    for s in r.seeds:
        if s.status == "timeout":
            emit(f"seed {s.seed}: killed at the {r.timeout_s:g} s timeout while in {s.phase_text()}; "
                 f"the partial log is kept", file=s.saved_log or s.saved_console, seed=s.seed, phase=s.phase,
                 step=s.step, iterations=s.iterations, timeout_s=r.timeout_s, elapsed_s=s.timers.get("wall_s"))


@check("rerun.run", title="Rerun failed", severity="error",
       rule="A record's train_gpt.py must run as submitted: torchrun --standalone --nproc_per_node=8 train_gpt.py",
       hint="Read the console output saved under verify/<timestamp>/ (console_seed<N>.out) for the traceback.",
       description="A seed whose torchrun exited with a non-zero code, or that ended without printing a "
                   "final score line, is an error; the console output and any log it wrote are saved.")
def run_failed(a, emit):
    r = _rerun(a)
    if r is None:
        return
    for s in r.seeds:
        if s.status == "failed":
            emit(f"seed {s.seed}: torchrun exited with code {s.returncode} while in {s.phase_text()}",
                 file=s.saved_console or s.saved_log, seed=s.seed, returncode=s.returncode, phase=s.phase,
                 last_lines=s.tail[-5:])
        elif s.status == "interrupted":
            emit(f"seed {s.seed}: interrupted while in {s.phase_text()}", file=s.saved_log or s.saved_console,
                 seed=s.seed, phase=s.phase)
        elif s.status == "ok" and s.reproduced is None:
            emit(f"seed {s.seed}: the run ended without a final score line", file=s.saved_log or s.saved_console,
                 seed=s.seed, phase=s.phase)


@check("rerun.reproduce", title="Score not reproduced", severity="error",
       rule="README: the reported score must come from the submitted script; review reruns records that look "
            "off. golf-verify states its tolerance: |reproduced - claimed| <= --tolerance (0.002 bpb by default)",
       hint="Rerun on the track's hardware with the data the record used; if it still misses, the claim or the "
            "script changed after the run.",
       description="Each seed's reproduced val_bpb (the golf_result_json line, else the final score line of "
                   "its new log) is compared with the claim for that seed: submission.json seed_results, else "
                   "the folder's existing log for the seed. Outside the tolerance is an error; within it is "
                   "info with the numbers. `--smoke` runs are not compared (the claims are for full runs) and "
                   "say 'not compared (smoke)'; a seed with no claim is info.")
def reproduce(a, emit):
    r = _rerun(a)
    if r is None:
        return
    for s in r.seeds:
        if s.reproduced is None:
            continue
        got = s.reproduced.get("val_bpb")
        claim = s.claimed or {}
        want = claim.get("val_bpb")
        ev = dict(seed=s.seed, reproduced_val_bpb=got, claimed_val_bpb=want, claim_source=claim.get("source"))
        if r.smoke:
            emit(f"seed {s.seed}: not compared (smoke): reproduced val_bpb {_fmt(got)} on the tiny dataset",
                 file=s.saved_log, severity="info", **ev)
        elif got is None:
            emit(f"seed {s.seed}: the new log has no val_bpb", file=s.saved_log, **ev)
        elif want is None:
            emit(f"seed {s.seed}: no claimed score to compare with; reproduced val_bpb {_fmt(got)}",
                 file=s.saved_log, severity="info", **ev)
        else:
            delta = got - float(want)
            ev.update(delta_bpb=round(delta, 8), tolerance_bpb=r.tolerance)
            if abs(delta) <= r.tolerance + 1e-12:
                emit(f"seed {s.seed} reproduces: claimed {_fmt(want)}, reproduced {_fmt(got)} "
                     f"(|delta| {abs(delta):.6f} <= {r.tolerance:g})", file=s.saved_log, severity="info", **ev)
            else:
                emit(f"seed {s.seed} does not reproduce: claimed {_fmt(want)}, reproduced {_fmt(got)} "
                     f"(|delta| {abs(delta):.6f} > {r.tolerance:g} bpb)", file=s.saved_log, **ev)


@check("rerun.hardware", title="Rerun hardware differs from the claim", severity="warning",
       rule="README: the 10-minute track is timed on 8xH100 (SXM)",
       hint="Rerun on 8xH100 SXM (or the hardware the record claims) before trusting its times and scores.",
       description="The device a rerun used (the log's `device:` field: world size x torch.cuda.get_device_name, "
                   "or the nvidia-smi table) is compared with the track: 8xH100 SXM for the 10-minute track "
                   "(PCIe and NVL boards do not count), and with the hardware the record claims "
                   "(submission.json `hardware`, else the device its own logs show). A mismatch is a warning: "
                   "times and scores may not transfer. `--smoke` runs on CPU are info.")
def hardware(a, emit):
    r = _rerun(a)
    if r is None:
        return
    seen = [s for s in r.seeds if s.device or s.gpus or s.world_size is not None]
    if not seen:
        return
    if r.smoke:
        devices = sorted({s.device or "unknown" for s in seen})
        emit(f"smoke run on {', '.join(devices)}: hardware not compared", severity="info", devices=devices)
        return
    for s in seen:
        names = list(s.gpus)
        if not names and s.device:
            m = re.match(r"\s*\d+\s*x\s*(.+)$", s.device)
            names = [m.group(1) if m else s.device]
        shown = s.device or f"{s.world_size}x{', '.join(names) or '?'}"
        cpu = any(n.strip().lower().startswith("cpu") for n in names)
        ok_track = False if cpu else is_track_hardware(s.world_size, names)
        ev = dict(seed=s.seed, device=shown, world_size=s.world_size, claimed=r.claimed_hardware, track=r.track)
        if r.track == "10min_16mb" and ok_track is False:
            emit(f"seed {s.seed} ran on {shown}; the 10-minute track is timed on {TRACK_HARDWARE}", file=s.saved_log,
                 **ev)
        elif r.claimed_hardware and not same_hardware(r.claimed_hardware, shown):
            emit(f"seed {s.seed} ran on {shown}; the record claims {r.claimed_hardware}", file=s.saved_log, **ev)
        else:
            emit(f"seed {s.seed} ran on {shown}" + (f" ({TRACK_HARDWARE}, the track's hardware)"
                                                     if ok_track else ""), file=s.saved_log, severity="info", **ev)


def _hw_key(text: str) -> tuple[int | None, str | None]:
    count = re.match(r"\s*(\d+)\s*x", text, re.I)
    rest = text[count.end():] if count else text
    model = re.search(r"(?<![A-Za-z])([ABHL]\d{2,3}|cpu)(?![0-9A-Za-z])", rest, re.I)
    return (int(count.group(1)) if count else None, model.group(1).upper() if model else None)


def same_hardware(claimed: str, seen: str) -> bool:
    """Same GPU count and model family where both strings name them ('8xH100 SXM' ~ '8xNVIDIA H100 80GB HBM3')."""
    (c_n, c_m), (s_n, s_m) = _hw_key(claimed), _hw_key(seen)
    if c_n is not None and s_n is not None and c_n != s_n:
        return False
    return not (c_m is not None and s_m is not None and c_m != s_m)


@check("rerun.eval-time", title="Rerun evaluation over 600 s end to end", severity="warning",
       rule="README: evaluation <= 600 s; CHALLENGE: end-to-end (artifact written -> final score) has exceeded "
            "600 s while the script's own eval_time said 500 s",
       hint="Count compile warm-up and diagnostic evals in the evaluation budget, or make them faster.",
       description="golf-verify times each rerun from outside: start -> artifact written (the `Serialized "
                   "model` line or the artifact file appearing) -> final score (the golf_result_json line, "
                   "else the last final score line). On the 10-minute track an artifact -> final time over "
                   "600 s (plus 1 s) is a warning, with the script's own total_eval_time beside it. Not "
                   "judged for --smoke runs.")
def eval_time(a, emit):
    r = _rerun(a)
    if r is None or r.smoke or r.track != "10min_16mb":
        return
    for s in r.seeds:
        e2e = s.timers.get("artifact_to_final_s")
        if e2e is not None and e2e > EVAL_LIMIT_S + EVAL_TOLERANCE_S:
            emit(f"seed {s.seed}: {e2e:.1f} s from the artifact to the final score, measured outside the script "
                 f"(the script says total_eval_time {_fmt(s.script.get('total_eval_time_s'))} s)",
                 file=s.saved_log, seed=s.seed, artifact_to_final_s=e2e,
                 script_total_eval_time_s=s.script.get("total_eval_time_s"))
