"""Is the improvement over the comparison record significant under the selected policy?"""

from __future__ import annotations

from verifier.checks import check
from verifier.stats import nats_to_bpb, one_sample, plan_seeds, welch_one_sided

SAME_RATIO = 0.005  # bpb-per-nat ratios closer than 0.5 % are the same tokenizer and validation set


def new_values(a):
    pairs = [(r.final.val_loss, r.final.val_bpb) for r in a.runs
             if r.final is not None and r.final.val_loss is not None and r.final.val_bpb is not None]
    if pairs:
        return [p[0] for p in pairs], [p[1] for p in pairs], "seed logs"
    c = a.claims
    if c is not None:
        pairs = [(s.val_loss, s.val_bpb) for _, s in sorted(c.seed_results.items())
                 if s.val_loss is not None and s.val_bpb is not None]
        if pairs:
            return [p[0] for p in pairs], [p[1] for p in pairs], "submission seed_results"
    return [], [], None


@check("stats.significance", title="Improvement not significant", severity="error",
       rule="README: beat the current best by >= 0.005 nats at p < 0.01 (policy readme-2026-03); leaderboard "
            "practice later used p < 0.25 (policy leaderboard-2026-04, threads #1900/#1902)",
       hint="Run more seeds (the finding says how many the observed spread needs) or improve the margin.",
       description="With --against <record> (or --sota-loss / --sota-bpb, or a comparison in golf-pack's "
                   "submission.json): a one-sided Welch test of the seeds' val_loss against the comparison's "
                   "per-seed val_loss with the policy's margin (0.005 nats), or a one-sample test against a "
                   "single number. When the two records use different tokenizers the test runs on val_bpb "
                   "with the margin converted by this record's bpb-per-nat ratio. Not significant: error on "
                   "the 10-minute track, info otherwise; the seed planner says how many seeds would reach the "
                   "policy if the observed mean and spread held. Significant: info with the numbers.")
def significance(a, emit):
    comp = a.comparison
    if comp is None:
        a.skip("stats.significance", a.comparison_error or "no comparison (--against, --sota-loss or --sota-bpb)")
        return
    losses, bpbs, source = new_values(a)
    if not losses:
        emit("no per-seed val_loss/val_bpb to test", severity="error" if a.record_track else "info")
        return
    policy = a.policy
    ratio_new, ratio_ref = a.ratio, comp.ratio
    if ratio_new is None:
        ratios = [b / l for l, b in zip(losses, bpbs) if l > 0 and b > 0]
        ratio_new = sum(ratios) / len(ratios) if ratios else None
    same = ratio_ref is None or ratio_new is None or abs(ratio_new / ratio_ref - 1.0) <= SAME_RATIO
    if same and comp.losses:
        unit, new, ref, margin = "nats", losses, comp.losses, policy.margin_nats
    elif comp.bpbs and ratio_new:
        unit, new, ref, margin = "bpb", bpbs, comp.bpbs, nats_to_bpb(policy.margin_nats, ratio_new)
    else:
        emit("the comparison has no figures in comparable units", severity="error" if a.record_track else "info")
        return
    fail = "error" if a.record_track else "info"
    base = {"comparison": comp.name, "comparison_source": comp.source, "unit": unit, "margin": round(margin, 8),
            "alpha": policy.alpha, "policy": policy.id, "n_new": len(new), "n_ref": len(ref), "source": source}
    if len(new) < 2:
        try:
            need = plan_seeds(new, ref if len(ref) > 1 else None, reference=ref[0] if len(ref) == 1 else None,
                              margin=margin, alpha=policy.alpha)
        except (OverflowError, ValueError, ZeroDivisionError):
            need = None
        a.significance = {**base, "p": None, "seeds_needed": need}
        emit("one seed cannot show significance; "
             + (f"about {need} seeds would be needed at the comparison's spread" if need else
                "the observed improvement does not exceed the margin"), severity=fail, seeds_needed=need, **base)
        return
    try:
        if len(ref) >= 2:
            result = welch_one_sided(new, ref, margin)
            need = plan_seeds(new, ref, margin=margin, alpha=policy.alpha)
        else:
            result = one_sample(new, ref[0], margin)
            need = plan_seeds(new, reference=ref[0], margin=margin, alpha=policy.alpha)
    except (OverflowError, ValueError, ZeroDivisionError) as exc:
        emit(f"the test cannot be computed on these figures ({type(exc).__name__})", severity=fail, **base)
        return
    a.significance = {**base, **result.to_dict(), "seeds_needed": need,
                      "margin_bpb": round(nats_to_bpb(policy.margin_nats, ratio_new), 8) if ratio_new else None}
    numbers = dict(p=result.p, t=result.t, df=result.df, mean_new=result.mean_new, mean_ref=result.mean_ref,
                   improvement=result.improvement, seeds_needed=need, **base)
    test = "Welch" if result.method == "welch" else "one-sample t"
    if result.p < policy.alpha:
        emit(f"improvement {result.improvement:.5f} {unit} over {comp.name} (margin {margin:.5f}); one-sided {test} "
             f"p = {result.p:.3g} < {policy.alpha}", severity="info", **numbers)
    else:
        plan = (f"about {need} seeds would reach p < {policy.alpha} if the mean and spread held" if need else
                "no number of seeds suffices: the observed improvement does not exceed the margin")
        emit(f"improvement {result.improvement:.5f} {unit} over {comp.name} with margin {margin:.5f}: one-sided "
             f"{test} p = {result.p:.3g}, not < {policy.alpha}; {plan}", severity=fail, **numbers)
