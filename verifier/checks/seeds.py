"""Seeds: what the logs print, what their names and the JSON claim, and how many there are."""

from __future__ import annotations

from verifier.checks import check


@check("seed.mismatch", title="Seed claims disagree", severity="warning", strict_severity="error",
       rule="CHALLENGE 'known inconsistencies': a log's printed seed disagrees with its file name; "
            "review asks that every figure be traceable to its log",
       hint="Rename the log after the seed it prints, or fix the seed in submission.json.",
       description="A log's printed seed (`seed:N`, `  seed: N` in a Hyperparameters block, `seed=N` in a "
                   "config line, golf_result_json) must match the seed in its file name "
                   "(`train_seed42.log`, `*_s42.txt`, `log_*_seed-42.txt`); a JSON seed whose figures are "
                   "found only in a log printing another seed is an error; the JSON's seeds list must "
                   "agree with its seed_results keys.")
def seed_mismatch(a, emit):
    for name in sorted(a.folder.logs):
        s = a.folder.logs[name]
        if s.seed is not None and s.filename_seed is not None and s.seed != s.filename_seed:
            emit(f"the file name says seed {s.filename_seed} but the log prints seed {s.seed}", file=name,
                 line=s.seed_line, filename_seed=s.filename_seed, printed_seed=s.seed)
        if len(s.seeds_printed) > 1 and s.final is not None:
            emit(f"the log prints several seeds ({', '.join(map(str, s.seeds_printed[:6]))})", file=name,
                 severity="info", printed_seeds=s.seeds_printed[:10])
    c = a.claims
    for seed, log, log_seed in a.claim_seed_mismatch:
        emit(f"the JSON's figures for seed {seed} are those of {log}, which prints seed {log_seed}",
             file=c.file if c else None, severity="error", json_seed=seed, log=log, printed_seed=log_seed)
    if c is not None and c.seeds and c.seed_results and isinstance(c.data.get("seeds"), list):
        listed, keyed = set(c.seeds), set(c.seed_results)
        if listed != keyed:
            emit(f"seeds lists {sorted(listed)} but seed_results has {sorted(keyed)}", file=c.file,
                 seeds=sorted(listed), seed_results=sorted(keyed))


@check("seed.count", title="Too few seeds", severity="warning", strict_severity="error",
       rule="README: enough runs to show the improvement at p < 0.01; 'an average over 3 training runs is "
            "sufficient' most often (policy min_seeds)",
       hint="Run more seeds (golf-verify's seed planner in stats.significance says how many the spread needs).",
       description="The number of distinct seeds with a final score must reach the policy's min_seeds (3) "
                   "for the 10-minute track (info for non-record runs); every seed the JSON lists must have "
                   "a log.")
def seed_count(a, emit):
    if a.pending and not a.folder.logs:
        return
    seeds = {r.seed for r in a.runs if r.seed is not None}
    n = len(seeds) + sum(1 for r in a.runs if r.seed is None)
    need = a.policy.min_seeds
    if a.runs and n < need:
        emit(f"{n} seed log(s) with a final score; the policy asks for {need}", severity=None if a.record_track else "info",
             seeds=sorted(seeds), needed=need)
    c = a.claims
    for seed in sorted(set(a.seeds_without_log)):
        emit(f"the JSON lists seed {seed} but no log with a final score is for that seed",
             file=c.file if c else None, seed=seed)


@check("seed.duplicate", title="Several logs for one seed", severity="warning",
       rule="README: one train log per seed; the reported mean must say which runs it averages",
       hint="Keep one log per seed (move reruns into a subfolder and name them in the README), or use distinct seeds.",
       description="Several logs print the same seed. Identical results (a copied train.log) are info; "
                   "different results are a warning unless the JSON's per-seed figures say which log "
                   "counts (then info).")
def seed_duplicate(a, emit):
    logs = a.folder.logs
    for seed, names in sorted(a.duplicates.items(), key=lambda kv: int(kv[0])):
        finals = {(logs[n].final.val_bpb, logs[n].final.val_loss) for n in names if logs[n].final}
        chosen = [r.log for r in a.runs if r.log in names]
        if len(finals) <= 1:
            emit(f"{len(names)} logs for seed {seed} with identical results", severity="info", seed=int(seed),
                 logs=names)
        else:
            # resolved by the JSON's per-seed figures, or none of them counts (side experiments): info
            sev = "info" if seed in a.duplicate_resolved_by_json or not chosen else None
            emit(f"{len(names)} logs for seed {seed} with different results; counted: "
                 f"{', '.join(chosen) or 'none'}", severity=sev, seed=int(seed), logs=names, counted=chosen,
                 val_bpb={n: logs[n].final.val_bpb for n in names})
