"""The validation data the logs report, and logs that could not be interpreted."""

from __future__ import annotations

from verifier.analysis import load_canonical
from verifier.checks import check


def _identify(count: int, tokenizers: dict) -> str | None:
    for key, entry in tokenizers.items():
        if entry.get("val_tokens") == count:
            return key
    return None


@check("data.val-tokens", title="Validation token count not canonical", severity="warning", strict_severity="error",
       rule="README: scored on the fixed FineWeb validation split; canonical counts per tokenizer are "
            "pinned in verifier/canonical.json from the public records' logs",
       hint="Evaluate on the full published validation shards for the tokenizer (fineweb_val_*.bin).",
       description="The validation token count a log prints (`val_loader:shards ... tokens:N`, `val_tokens: N`, "
                   "golf_result_json val_tokens) must equal the canonical count of its tokenizer; a count at "
                   "most 65,536 tokens short (cut to whole sequences) is info. Unknown tokenizers are "
                   "identified by their count when possible.")
def val_tokens(a, emit):
    canonical = load_canonical()
    tokenizers = canonical["tokenizers"]
    allowance = int(canonical.get("truncation_allowance_tokens", 65536))
    seen: dict[tuple, list[str]] = {}
    for run in a.runs:
        for name in [run.log] + run.companions:
            s = a.folder.logs[name]
            if s.val_tokens is not None:
                seen.setdefault((s.tokenizer, s.val_tokens), []).append(name)
    for (tok, count), names in sorted(seen.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        names = sorted(set(names))
        line = a.folder.logs[names[0]].val_tokens_line
        entry = tokenizers.get(tok) if tok else None
        if entry is None:
            guess = _identify(count, tokenizers)
            if guess is None:
                emit(f"{count:,} validation tokens for tokenizer {tok or 'unknown'}: no canonical count is pinned",
                     file=names[0], line=line, severity="info", val_tokens=count, tokenizer=tok, logs=names)
            continue
        expected = int(entry["val_tokens"])
        if count == expected:
            continue
        short = expected - count
        if 0 < short <= allowance:
            emit(f"{count:,} validation tokens, {short:,} short of the canonical {expected:,} for {tok} "
                 f"(cut to whole sequences)", file=names[0], line=line, severity="info", val_tokens=count,
                 canonical=expected, tokenizer=tok, logs=names)
        else:
            note = entry.get("other_counts_seen", {}).get(str(count))
            emit(f"{count:,} validation tokens but the canonical {tok} validation set has {expected:,}"
                 + (f" (seen before: {note})" if note else ""), file=names[0], line=line, val_tokens=count,
                 canonical=expected, tokenizer=tok, logs=names)


@check("logs.unparsed", title="Log not interpreted", severity="info",
       rule="golf-verify reads every log family of the public records and golf-pack's own format",
       hint="Keep the complete log the script wrote (stdout of rank 0), unedited.",
       description="A log file with nothing recognisable (info), a log without a final score line "
                   "(info when other logs of the folder have one, else it is score.missing), or a log "
                   "with parser problems: non-finite scores, NUL bytes, several seeds, malformed "
                   "golf_result_json (warning).")
def logs_unparsed(a, emit):
    selected = {r.log for r in a.runs}
    for name in sorted(a.folder.logs):
        s = a.folder.logs[name]
        if not s.recognised:
            emit("nothing in this file looks like a training log", file=name, lines=s.lines)
            continue
        if s.final is None and a.runs:
            emit("incomplete run: the log has no final score line (the run failed or was cut off, or explored)",
                 file=name,
                 steps=s.steps, seed=s.seed)
        problems = [p for p in s.problems if not p.startswith("prints several seeds")]
        if problems:
            emit("; ".join(problems[:5]), file=name, severity="warning" if name in selected or not a.runs else "info",
                 problems=problems[:10])
    for name in a.unselected:
        s = a.folder.logs[name]
        if name not in {c for r in a.runs for c in r.companions}:
            emit(f"the log's score (val_bpb {s.final.val_bpb}) is not counted for any seed of the submission",
                 file=name, seed=s.seed, val_bpb=s.final.val_bpb)
