"""Training on validation tokens before they are scored, read statically from the script's
validation-data model (verifier.codeflow): pre-eval TTT, SLOT and compile warm-up on validation
tokens. A `backward()` whose loss is computed from validation data is legal only when a scoring of
validation data (a loss accumulated under no_grad / inference_mode) comes before it in the same
loop iteration, at any call level: the score-first chunk loop with its epoch loop inside is legal,
training every chunk and scoring afterwards is not. The logs say whether a flagged path ran
(`ttt_enabled: False` makes it dormant: a warning, not an error)."""

from __future__ import annotations

from verifier.checks import check

_RULES = ("README: only test-time train on validation tokens already evaluated; thread #1017 C3 (score before "
          "update); ")


def val_training_sites(a, kinds: tuple[str, ...]):
    """(script name, ScriptInfo, TrainSite) of backward() on validation data that is not score-first."""
    for name, info in a.programs():
        prog = info.program
        if prog is None or prog.problem:
            continue
        for site in prog.val_training():
            if site.scored_first is not True and site.kind in kinds:
                yield name, info, site


def not_checked(a, check_id: str) -> bool:
    """Fail closed: the code could not be read (facts only, or unparsable): skip with the reason."""
    info = a.folder.scripts.get(a.folder.code_script or "")
    if info is None or info.text is None:
        a.skip(check_id, "script source not available (script facts only)" if a.folder.scripts else "no script")
        return True
    prog = info.program
    if prog is not None and prog.problem:
        a.skip(check_id, f"{a.folder.code_script} could not be read: {prog.problem}")
        return True
    return False


def site_severity(a, site) -> tuple[str, str]:
    """(severity, what the logs say about the path) for an illegal pattern."""
    if site.scored_first is None:
        return "warning", f"{site.func.name} is never called with validation data, so it does not run"
    prog = site.func.prog
    # lines its function prints show the site ran only when nothing in that function guards it
    prints = prog.log_prefixes(site.path[:1]) if prog is not None and not site.local_gates else None
    state, why = a.path_state(site.gates, prog, prints)
    if state in ("off", "default-off"):
        return "warning", f"dormant: {why}"
    if state == "on":
        return "error", f"it ran: {why}"
    if not a.folder.logs:
        return "error", "no logs yet to show it switched off"
    return "error", "the logs do not show it switched off"


def where(info, line: int) -> tuple[int | None, str]:
    """The finding's line and a location phrase (a wrapped script's line is in its decoded payload)."""
    if info.wrapped:
        return None, f" ({info.where(line)})"
    return line, ""


def emit_site(a, emit, name, info, site, what: str, severity: str | None = None, **extra):
    sev, ran = site_severity(a, site)
    line, loc = where(info, site.line)
    chain = " <- ".join(site.path[:4])
    emit(f"{what} in {site.func.name}{loc}; reached via {chain}; {ran}", file=name, line=line,
         severity=severity or sev, function=site.func.name, payload_line=site.line if info.wrapped else None,
         path=site.path[:6], **extra)


@check("ttt.static", title="Validation tokens trained on before they are scored", severity="error",
       rule=_RULES + "megathread #677 (pre-eval TTT: training on val_tokens, then scoring them, is training on "
            "the validation set)",
       hint="Score each chunk under torch.inference_mode() before any optimizer step on it (score-first), "
            "train only on chunks already scored, and report that single pass.",
       description="Every backward() whose loss is computed from validation data (followed from the validation "
                   "files through assignments, slices, calls and parameters; any name) must come after a scoring "
                   "of validation data in the same loop iteration, at any call level (the score-first chunk loop, "
                   "the phased global SGD on already-scored documents); a scoring that ends where the trained slice "
                   "begins (chunk i scored, then chunk i + 1 trained on) does not count. Validation data is followed "
                   "element by element through tuples and dicts (`train, val = load_splits()`, "
                   "`{s: glob(...) for s in SPLITS}`) and into lambdas called through a container "
                   "(`passes[name](model, tokens)`). Otherwise it is pre-eval TTT: an error, "
                   "or a warning when the path is dormant (its flag is off in the logs or by default) or "
                   "never called. A module created and trained on validation data that nothing scores "
                   "afterwards (a diagnostic probe) is a warning. The logs decide whether it ran: the flag in the "
                   "logs, lines the function prints, or the environment the README / run script sets. Fires on "
                   "rejected PRs #150, #297, #298, #330, #672, #702, #776, #1306, #1376, #1482, #1487, #1488 and "
                   "#1517; on merged records only as the diagnostic warning of 2026-03-26_37M_LeWM_Jepa (a "
                   "linear probe trained on validation hidden states).")
def ttt_static(a, emit):
    if not_checked(a, "ttt.static"):
        return
    for name, info, site in val_training_sites(a, ("pre-eval", "diagnostic")):
        if site.kind == "diagnostic":
            emit_site(a, emit, name, info, site, "a module created here is trained on validation tokens "
                      "(a diagnostic; the scored model is not updated)", severity="warning", kind="diagnostic",
                      hint="Train diagnostics on training data, or on validation tokens only after scoring them.")
            continue
        epochs = " over several epochs" if site.epochs else ""
        emit_site(a, emit, name, info, site, f"backward() on validation tokens with no scoring of them before it"
                  f"{epochs} (pre-eval TTT)", kind="pre-eval", epochs=site.epochs)


@check("legal.slot", title="SLOT: parameters optimised on the tokens being scored", severity="error",
       rule=_RULES + "PR #1240 (SLOT breaks C1: flipping a target changes other positions' predictions), "
            "#1319/#1321/#1376 rulings; issue #1336 (context-only SLOT: legality open)",
       hint="Remove the per-batch delta / logit-bias optimisation, or optimise it only on positions scored in "
            "earlier windows and never on the window's own targets.",
       description="A tensor created in the evaluation function with requires_grad (torch.zeros(..., "
                   "requires_grad=True), .requires_grad_(), nn.Parameter) is optimised with a loss on the "
                   "validation batch's targets and the same batch is then scored with it: error. When the "
                   "optimised loss reads only context positions (names like ctx/context/prefix: the "
                   "context-only variant of issue #1336) it is a warning. Dormant paths are warnings. Fires on "
                   "rejected PRs #1128, #1229, #1240, #1321, #1324, #1376 (error) and #1306, #1322, #1333 "
                   "(context-only); dormant (warning) in merged records "
                   "2026-03-31_ParallelResiduals_MiniDepthRecurrence (SLOT) and 2026-04-09_A2_Muon097_3Seed "
                   "(context-only ETLB).")
def legal_slot(a, emit):
    if not_checked(a, "legal.slot"):
        return
    for name, info, site in val_training_sites(a, ("slot",)):
        if site.causal_hint:
            sev, _ = site_severity(a, site)
            emit_site(a, emit, name, info, site, "a delta/bias is optimised on context positions of the "
                      "validation window, then the window is scored with it (context-only SLOT, issue #1336)",
                      severity="warning", kind="context-slot")
        else:
            emit_site(a, emit, name, info, site, "a delta/bias is optimised on the validation batch's targets, "
                      "then the same batch is scored with it (SLOT)", kind="slot")


@check("legal.warmup", title="Compile warm-up on validation tokens", severity="warning",
       rule=_RULES + "PR #1530 (a TTT compile warm-up ran backward()/step() on validation tokens; accepted "
            "because the warm-up state was discarded, flagged by reviewers)",
       hint="Warm up compiled TTT paths on random or training tokens (log 'random tokens, no val data').",
       description="A backward() on validation tokens in a warm-up (a function, loop or nearby log line that "
                   "says warm) before they are scored: a warning, as review accepted it in #1530 while asking "
                   "for random tokens. From the logs: a TTT compile warm-up that does not say it avoids "
                   "validation data (warning). Fires on merged records 2026-04-10_VarLenAttn and "
                   "2026-04-13_VarLenAttn_PhasingTTT2000 (the #1530 lineage).")
def legal_warmup(a, emit):
    if not not_checked(a, "legal.warmup"):
        for name, info, site in val_training_sites(a, ("warmup",)):
            emit_site(a, emit, name, info, site, "compile warm-up runs backward() on validation tokens before "
                      "they are scored", severity="warning", kind="warmup")
    for run in a.runs:
        s = run.summary
        if s.ttt_warmup_unlabelled:
            emit("the log warms up the TTT compile path without saying it avoids validation tokens", file=run.log,
                 line=s.ttt_warmup_unlabelled[0], severity="warning", kind="warmup-unlabelled", seed=run.seed)
