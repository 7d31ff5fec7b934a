"""Everything golf-pack writes into a record folder, from a loaded recipe and, once the seed logs
are in the folder, from those logs (packager/collect.py reads them)."""

from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packager import __version__
from packager.errors import UserError
from packager.render import recipe_features, render_script, third_party_requirements, wrapped
from packager.wrap import READABLE_NAME, wrap_lzma_b85

TRACK_DIRS = {"10min_16mb": "track_10min_16mb", "non_record_16mb": "track_non_record_16mb"}
SCRIPT_NAME = "train_gpt.py"


def folder_for(recipe, records_root: Path, today: _dt.date | None = None) -> Path:
    """records/<track>/<date>_<slug>. Without a date in the recipe, an existing folder for
    the same slug is reused (so re-rendering tomorrow does not fork the record)."""
    track_dir = Path(records_root) / TRACK_DIRS[recipe.track]
    date = recipe.identity.get("date")
    if not date:
        existing = sorted(track_dir.glob(f"????-??-??_{recipe.slug}")) if track_dir.exists() else []
        if existing:
            return existing[-1]
        date = (today or _dt.date.today()).isoformat()
    return track_dir / f"{date}_{recipe.slug}"


# ------------------------------------------------------------------ techniques (shared by README and blurb)

def script_hparams(recipe) -> list:
    """The hyperparameters the rendered script declares (its Hyperparameters block), in order."""
    from packager.hparams import all_hparams

    enabled = recipe_features(recipe.values)
    return [hp for hp in all_hparams() if hp.feature is None or hp.feature in enabled]


def _v(value) -> str:
    """A value as the script logs it (`hparam name=value`)."""
    return str(value)


def _feature_rows(recipe) -> list[tuple[str, str]]:
    from packager.hparams import all_features, all_hparams

    values = recipe.values
    enabled = recipe_features(values)
    hps = all_hparams()
    rows = []
    for name, (meaning, rule) in all_features().items():
        if name not in enabled:
            continue
        own = [hp.name for hp in hps if hp.feature == name]
        named = [n for n in re.findall(r"[A-Za-z_]\w*", rule) if n in values and n not in own]
        shown = [n for n in own + named if n != "ttt_allow_illegal"]
        setting = ", ".join(f"`{n}={_v(values[n])}`" for n in dict.fromkeys(shown)) or "on"
        rows.append((meaning, setting))
    return rows


def technique_rows(recipe) -> list[tuple[str, str]]:
    """(technique, setting) rows with the values train_gpt.py uses by default (the recipe's)."""
    v = recipe.values
    evaluation = (f"sliding window, stride {v['sliding_stride']}" if v.get("sliding_stride") else "full split, "
                  f"windows of {v.get('eval_seq_len') or v['train_seq_len']} tokens")
    if v.get("ttt_mode", "none") != "none":
        evaluation += f", then test-time training ({v['ttt_mode']})"
    rows = [
        ("model", f"{v['num_layers']} layers, width {v['model_dim']}, {v['num_heads']} heads / {v['num_kv_heads']} "
                  f"KV heads, MLP {v['mlp_mult']}x {v['activation']}, logit softcap {v['logit_softcap']}"),
        ("vocabulary", f"{v['vocab_size']} tokens ({Path(v['tokenizer_path']).name}), tied embeddings: "
                       f"{v['tie_embeddings']}"),
        ("training", f"{v['train_batch_tokens']:,} tokens/step, seq len {v['train_seq_len']}, at most "
                     f"{v['iterations']:,} steps and {v['max_wallclock_seconds']:g} s, warmdown "
                     f"{v['warmdown_iters']} steps"),
        ("optimizer", f"Muon (matrix LR {v['matrix_lr']}, momentum {v['muon_momentum']}) and Adam (tied embedding "
                      f"LR {v['tied_embed_lr']}, scalar LR {v['scalar_lr']}, betas {v['beta1']}/{v['beta2']})"),
        ("export", f"{v.get('quant_scheme', 'int8')} + {v['compressor']} (level {v['compress_level']})"),
        ("evaluation", evaluation),
    ]
    return rows + _feature_rows(recipe)


def technique_summary(recipe) -> str:
    """One line for a blurb when the recipe has none."""
    v = recipe.values
    features = sorted(recipe_features(v) - {"ttt_full", "ttt_score_first", "ttt_sgd"})
    text = (f"{v['num_layers']}x{v['model_dim']} {v['num_heads']}H/{v['num_kv_heads']}KV, MLP {v['mlp_mult']}x "
            f"{v['activation']}, vocab {v['vocab_size']}, {v.get('quant_scheme', 'int8')} + {v['compressor']}")
    return text + (f"; {', '.join(features)}" if features else "") + "."


def _technique_section(recipe, script: str) -> list[str]:
    lines = ["## Techniques", "",
             "Generated from the recipe: these are the defaults of the `Hyperparameters` block of `train_gpt.py`.",
             "", "| technique | setting |", "| --- | --- |"]
    lines += [f"| {name} | {setting} |" for name, setting in technique_rows(recipe)]
    lines += [f"| script | {script.count(chr(10))} lines, {len(script.encode())} bytes readable |", "",
              "<details><summary>Every hyperparameter of train_gpt.py</summary>", "",
              "| hyperparameter | value | environment variable |", "| --- | --- | --- |"]
    lines += [f"| {hp.name} | `{_v(recipe.values[hp.name])}` | `{hp.env}` |" for hp in script_hparams(recipe)]
    lines += ["", "</details>", ""]
    return lines


def _credits(recipe) -> list[str]:
    credits = recipe.identity.get("based_on") or []
    if not credits:
        return []
    lines = ["## Based on", ""]
    for item in credits:
        if isinstance(item, str):
            lines.append(f"- {item}")
        else:
            extra = [f"PR #{item['pr']}"] if item.get("pr") else []
            extra += [f"by {item['author']}"] if item.get("author") else []
            note = f": {item['note']}" if item.get("note") else ""
            lines.append(f"- {item['record']}{' (' + ', '.join(extra) + ')' if extra else ''}{note}")
    return lines + [""]


def _illegal(recipe) -> list[str]:
    if recipe.values.get("ttt_mode") != "pre_eval":
        return []
    return ["> **Not allowed for records.** This recipe's pre-eval test-time training trains on the",
            "> validation tokens before scoring them, which the challenge rules forbid. It exists only",
            "> to reproduce an illegal submission so that `golf-verify` can be shown to reject it.", ""]


def _blurb(recipe) -> str:
    return " ".join((recipe.identity.get("blurb") or technique_summary(recipe)).split())


def _footer(recipe) -> list[str]:
    return [f"Generated by golf-pack {__version__} from `recipe.yaml` (sha256 `{recipe.sha256}`).", ""]


# ------------------------------------------------------------------ pending (no logs yet)

def submission_pending(recipe, date: str) -> dict:
    ident = recipe.identity
    return {
        "author": ident["author"],
        "github_id": ident["github_id"],
        "name": ident["name"],
        "date": date,
        "track": recipe.track,
        "blurb": _blurb(recipe),
        "status": "pending",
        "seeds": recipe.seeds,
        "packager": {"version": __version__, "recipe_sha256": recipe.sha256},
    }


def readme_pending(recipe, script: str, date: str) -> str:
    ident = recipe.identity
    lines = [f"# {ident['name']}", "", _blurb(recipe), "",
             "**Results: pending.** No training logs are in this folder yet. Run the command below once",
             "per seed, then `golf-pack` on this folder to fill in the results.", ""]
    lines += _illegal(recipe)
    lines += ["## Run", "", "```bash"]
    lines += [f"SEED={seed} torchrun --standalone --nproc_per_node=8 train_gpt.py" for seed in recipe.seeds]
    lines += ["```", ""]
    lines += _technique_section(recipe, script)
    lines += _credits(recipe)
    lines += _footer(recipe)
    return "\n".join(lines)


# ------------------------------------------------------------------ results (seed logs in the folder)

def _r(x: float) -> float:
    return round(float(x), 8)


def _std(xs: list[float]) -> float | None:
    """The sample standard deviation, None for one seed (it is undefined for one value)."""
    from packager.collect import stdev

    return _r(stdev(xs)) if len(xs) > 1 else None


def _mean_text(xs: list[float], unit: str = "") -> str:
    """`mean ± std` (8 decimals), or the one value: a std is only shown for two or more seeds."""
    mean = f"{sum(xs) / len(xs):.8f}{unit}"
    return f"{sum(xs) / len(xs):.8f} ± {_std(xs):.8f}{unit}" if len(xs) > 1 else mean


def _same_or_joined(values) -> str:
    vals = sorted({str(x) for x in values if x not in (None, "")})
    return ", ".join(vals) if vals else "unknown"


def submission_results(recipe, date: str, col, shipped: bytes) -> dict:
    runs = col.runs
    losses, bpbs = [r.val_loss for r in runs], [r.val_bpb for r in runs]
    sub = submission_pending(recipe, date)
    sub.pop("packager")
    sub["blurb"] = results_blurb(recipe, col)
    sub["status"] = col.status
    sub.update({
        "val_bpb": _r(sum(bpbs) / len(bpbs)),
        "val_bpb_std": _std(bpbs),
        "val_loss": _r(sum(losses) / len(losses)),
        "val_loss_std": _std(losses),
        "seeds": recipe.seeds,
        "seed_results": {str(r.seed): {
            "val_bpb": _r(r.val_bpb), "val_loss": _r(r.val_loss),
            "artifact_bytes": int(r.result["bytes_total"]), "bytes_code": int(r.result["bytes_code"]),
            "train_time_ms": r.result["train_time_ms"], "eval_time_ms": r.result["eval_time_ms"],
            "steps": int(r.result["steps"]), "step_avg_ms": r.result.get("step_avg_ms", 0.0), "log": r.log,
        } for r in runs},
        "bytes_total": max(int(r.result["bytes_total"]) for r in runs),
        "bytes_code": len(shipped),
        "hardware": _same_or_joined(r.result.get("device") for r in runs),
        "software": {"python": _same_or_joined(r.result.get("python") for r in runs),
                     "torch": _same_or_joined(r.result.get("torch") for r in runs),
                     "golf-pack": _same_or_joined(r.result.get("packager_version") for r in runs)},
    })
    if "step_avg_ms" not in runs[0].result:
        for entry in sub["seed_results"].values():
            entry.pop("step_avg_ms")
    comp = col.comparison
    if comp is not None:
        c = {"record": comp.record}
        if comp.val_loss:
            c["val_loss"] = _r(sum(comp.val_loss) / len(comp.val_loss))
            c["seed_val_losses"] = [_r(x) for x in comp.val_loss]
        if comp.val_bpb:
            c["val_bpb"] = _r(sum(comp.val_bpb) / len(comp.val_bpb))
            c["seed_val_bpbs"] = [_r(x) for x in comp.val_bpb]
        sub["comparison"] = c
        sub["significance"] = col.significance
    sub["packager"] = {"version": __version__, "recipe_sha256": recipe.sha256}
    return sub


def results_blurb(recipe, col) -> str:
    bpbs = [r.val_bpb for r in col.runs]
    n = len(bpbs)
    score = (f"Mean val_bpb {sum(bpbs) / n:.4f} (sample std {_std(bpbs):.4f}) over {n} seeds" if n > 1
             else f"val_bpb {bpbs[0]:.4f} from one seed")
    text = (f"{_blurb(recipe)} {score}; largest artifact {max(int(r.result['bytes_total']) for r in col.runs):,} "
            f"bytes.")
    if col.missing:
        text += f" Partial: seed{'s' if len(col.missing) > 1 else ''} {', '.join(map(str, col.missing))} missing."
    return text


def run_command(seed: int, overrides: dict, world_size: int) -> str:
    from packager.hparams import all_hparams

    from packager.collect import env_text

    hps = {hp.name: hp for hp in all_hparams()}
    env = [f"SEED={seed}"] + [f"{hps[n].env}={shlex.quote(env_text(hps[n].kind, logged))}"
                              for n, (_, logged) in overrides.items()]
    return f"{' '.join(env)} torchrun --standalone --nproc_per_node={world_size} train_gpt.py"


def _significance_lines(col, policy) -> list[str]:
    lines = ["## Significance", ""]
    comp, sig = col.comparison, col.significance
    rule = (f"policy `{policy.id}`: beat the comparison by at least {policy.margin_nats:g} nats (val_loss) at "
            f"p < {policy.alpha:g}")
    if comp is None:
        return lines + [f"No comparison record is named, so no significance is claimed ({rule}). Name one with "
                        f"`identity.compare_to` in the recipe or `golf-pack --against records/<track>/<folder>`.", ""]
    ref = comp.val_loss or comp.val_bpb
    unit = "val_loss" if comp.val_loss else "val_bpb"
    text = (f"Compared with `{comp.record}` ({len(ref)} seed{'s' if len(ref) > 1 else ''}, mean {unit} "
            f"{sum(ref) / len(ref):.8f}; {rule}): ")
    if "delta_nats" not in sig:
        return lines + [text + sig.get("note", "no test") + ".", ""]
    lower = sig["delta_nats"] >= 0
    text += (f"this record's mean val_loss is {'lower' if lower else 'higher'} by {abs(sig['delta_nats']):.8f} nats "
             f"({abs(sig['delta_bpb']):.8f} bpb). ")
    if sig.get("method") == "none":
        need = sig.get("seeds_needed")
        text += f"One seed cannot show significance{f'; about {need} seeds would be needed' if need else ''}."
        return lines + [text, ""]
    test = "Welch t-test" if sig["method"] == "welch-one-sided" else "one-sample t-test"
    t = f"t = {sig['t']:.4f}, " if "t" in sig else ""
    df = f"df = {sig['df']:.4f}, " if "df" in sig else ""
    text += f"One-sided {test} ({sig['unit']}): {t}{df}p = {sig['p_value']:.6g}: "
    if sig["significant"]:
        text += f"**significant** (p < {sig['alpha']:g})."
    else:
        need = sig.get("seeds_needed")
        text += (f"**not significant** (p >= {sig['alpha']:g}); "
                 + (f"about {need} seeds would reach it if the mean and spread held." if need else
                    "no number of seeds reaches it: the improvement does not exceed the margin."))
    return lines + [text, ""]


def _overridden(runs) -> dict[str, tuple[str, str]]:
    """{hyperparameter: (recipe value, what the runs used)} for the values the runs overrode."""
    names = sorted({name for r in runs for name in r.overrides})
    recipe_value = {n: next(r.overrides[n][0] for r in runs if n in r.overrides) for n in names}
    return {n: (recipe_value[n], _same_or_joined(r.overrides[n][1] if n in r.overrides else recipe_value[n]
                                                  for r in runs)) for n in names}


def readme_results(recipe, script: str, col, shipped: bytes, policy, plot: str | None, plot_note: str) -> str:
    ident, runs = recipe.identity, col.runs
    losses, bpbs = [r.val_loss for r in runs], [r.val_bpb for r in runs]
    n = len(runs)
    biggest = max(int(r.result["bytes_total"]) for r in runs)
    devices = _same_or_joined(r.result.get("device") for r in runs)
    paths = _same_or_joined(r.result.get("eval_path") for r in runs)
    over = _overridden(runs)
    spread = (f"mean ± sample standard deviation over {n} seeds" if n > 1
              else "one seed; a standard deviation needs two or more")
    lines = [f"# {ident['name']}", "", _blurb(recipe), "",
             f"**val_bpb {_mean_text(bpbs)}**, val_loss {_mean_text(losses, ' nats')} ({spread}: "
             f"{', '.join(str(r.seed) for r in runs)}). Largest artifact {biggest:,} bytes of 16,000,000 "
             f"(code {len(shipped):,} bytes); longest training "
             f"{max(float(r.result['train_time_ms']) for r in runs) / 1000:.3f} s on {devices}.", ""]
    if over:
        lines += [f"> **Not the recipe as written.** The runs set {', '.join(f'`{k}={v[1]}`' for k, v in over.items())} "
                  f"by environment variable (the recipe: {', '.join(f'`{k}={v[0]}`' for k, v in over.items())}); "
                  f"these scores are of that configuration. The techniques table lists the recipe's values.", ""]
    if col.missing:
        lines += [f"> **Partial results.** Seed{'s' if len(col.missing) > 1 else ''} "
                  f"{', '.join(map(str, col.missing))} of the recipe's seeds {recipe.seeds} "
                  f"{'have' if len(col.missing) > 1 else 'has'} no complete log; the figures cover only the seeds "
                  f"listed below. Not ready to submit.", ""]
    lines += _illegal(recipe)
    lines += ["## Results", "",
              f"Each seed's figures come from the `golf_result_json` line of its log (scored path: {paths}).", "",
              "| seed | val_loss | val_bpb | artifact bytes | code bytes | train time (ms) | eval time (ms) | steps "
              "| step avg (ms) | log |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in runs:
        res = r.result
        lines.append(f"| {r.seed} | {r.val_loss:.8f} | {r.val_bpb:.8f} | {int(res['bytes_total']):,} | "
                     f"{int(res['bytes_code']):,} | {float(res['train_time_ms']):,.0f} | "
                     f"{float(res['eval_time_ms']):,.0f} | {int(res['steps']):,} | "
                     f"{float(res.get('step_avg_ms', 0.0)):.2f} | [{r.log}]({r.log}) |")
    lines += [f"| **{'mean ± std' if n > 1 else 'result'}** | {_mean_text(losses)} | {_mean_text(bpbs)} | "
              f"max {biggest:,} | | | | | | |", ""]
    for log, why in col.excluded:
        lines.append(f"- Not counted: `{log}`: {why}.")
    if col.excluded:
        lines.append("")
    lines += _significance_lines(col, policy)
    lines += ["## Loss curves", ""]
    lines += [f"![Train and validation loss per seed]({plot})" if plot else plot_note, ""]
    if plot and plot_note:
        lines += [f"Note: {plot_note}.", ""]
    lines += _technique_section(recipe, script)
    if over:
        lines += ["**Run-time overrides.** The runs set these hyperparameters by environment variable instead of "
                  "using the recipe's value (from each log's `hparam` lines):", "",
                  "| hyperparameter | recipe | runs |", "| --- | --- | --- |"]
        lines += [f"| {name} | `{recipe_value}` | `{ran}` |" for name, (recipe_value, ran) in over.items()]
        lines.append("")
    lines += ["## Run", "", "The exact command of each seed (from its log: world size and overrides):", "", "```bash"]
    lines += [run_command(r.seed, r.overrides, int(r.result.get("world_size", 8))) for r in runs]
    lines += [f"SEED={seed} torchrun --standalone --nproc_per_node=8 train_gpt.py   # not run yet"
              for seed in col.missing]
    lines += ["```", "",
              f"Data: `{recipe.values['data_path']}` and `{recipe.values['tokenizer_path']}` by default; set "
              "`DATA_PATH` / `TOKENIZER_PATH` where yours live elsewhere.", ""]
    lines += _credits(recipe)
    lines += ["## Environment", "",
              f"Hardware: {devices}. Software: python {_same_or_joined(r.result.get('python') for r in runs)}, "
              f"torch {_same_or_joined(r.result.get('torch') for r in runs)}, golf-pack "
              f"{_same_or_joined(r.result.get('packager_version') for r in runs)} (from the logs).", ""]
    lines += _footer(recipe)
    return "\n".join(lines)


# ------------------------------------------------------------------ the folder

@dataclass
class Rendered:
    files: dict[str, bytes]
    manifest: dict  # extra manifest entries (written beside the file hashes)
    collected: object | None = None
    notes: list[str] = field(default_factory=list)


def record_date(recipe, folder: Path) -> str:
    """The record's date: the folder name's date prefix (records/<track>/<date>_<slug>), else the
    recipe's identity.date, else the date this folder was first written (kept in the manifest), else today."""
    from packager.writer import read_manifest

    m = re.match(r"\d{4}-\d{2}-\d{2}(?=_|$)", folder.name)
    if m:
        return m.group(0)
    if recipe.identity.get("date"):
        return recipe.identity["date"]
    stored = (read_manifest(folder) or {}).get("date") if folder.exists() else None
    return stored or _dt.date.today().isoformat()


def _stored(folder: Path) -> dict:
    from packager.writer import read_manifest

    if not folder.exists():
        return {}
    manifest = read_manifest(folder)
    return (manifest or {}).get("collect") or {}


def _policy(spec):
    from verifier.stats import Policy, load_policy

    if isinstance(spec, dict):
        return Policy(**spec)
    try:
        return load_policy(spec)
    except (OSError, ValueError) as exc:
        raise UserError(f"--policy: {exc}") from None


def _plot(folder: Path, col, recipe, stored: dict) -> tuple[str | None, bytes | None, str | None, str]:
    """(name, png bytes, data sha256, README note) for the loss curves."""
    from packager.plot import PLOT_NAME, data_sha256, draw, plot_data
    from packager.writer import read_manifest, sha256_bytes

    data = plot_data(col.runs)
    digest = data_sha256(data)
    target = folder / PLOT_NAME
    manifest = read_manifest(folder) if folder.exists() else None
    recorded = (manifest or {}).get("files", {}).get(PLOT_NAME)
    on_disk = target.read_bytes() if target.is_file() else None
    untouched = on_disk is not None and recorded == sha256_bytes(on_disk)
    if untouched and stored.get("plot_data_sha256") == digest:
        return PLOT_NAME, on_disk, digest, ""  # same data: keep the PNG (byte-identical re-render)
    png = draw(data, recipe.identity["name"])
    if png is not None:
        return PLOT_NAME, png, digest, ""
    if untouched:
        # Cannot redraw here; keep the earlier plot, stale, and say so.
        return PLOT_NAME, on_disk, stored.get("plot_data_sha256"), (
            "matplotlib is not installed: loss_curves.png was drawn from earlier logs and not redrawn")
    return None, None, None, ("No plot: matplotlib is not installed (`pip install 'golf-pack[plots]'`, then run "
                              "golf-pack again).")


_RENDERED: dict[tuple, str] = {}


def _render(recipe) -> str:
    """render_script, memoised per recipe text within one process (a collect and the re-render
    check of the same folder render the same script)."""
    key = (recipe.text, __version__)
    if key not in _RENDERED:
        if len(_RENDERED) > 32:
            _RENDERED.clear()
        _RENDERED[key] = render_script(recipe)
    return _RENDERED[key]


def render_folder(recipe, folder: Path, *, against=None, allow_partial: bool | None = None,
                  policy=None) -> Rendered:
    """Every generated file of `folder`. Collects results when the folder holds seed logs.

    against: a record folder path (str/Path), "recipe" (drop a stored --against and use the
    recipe's compare_to), or None (keep what the last run stored). allow_partial / policy: None
    keeps the stored choice. The choices are stored in the manifest so that re-rendering the
    folder reproduces its files."""
    from packager.collect import Comparison, collect, comparison_from_folder, comparison_from_recipe, has_seed_logs
    from packager.collect import shown_path
    from packager.smoke import smoke_env

    folder = Path(folder)
    stored = _stored(folder)
    pol = _policy(policy if policy is not None else stored.get("policy"))
    allow = bool(stored.get("allow_partial", False)) if allow_partial is None else bool(allow_partial)
    if against == "recipe":
        comp_spec = None
    elif against is not None:
        path = Path(against)
        comp_spec = comparison_from_folder(path, shown_path(path, folder), "--against", pol).to_dict()
    else:
        comp_spec = stored.get("against")

    script = _render(recipe)
    date = record_date(recipe, folder)
    reqs = third_party_requirements(script)
    files = {}
    if wrapped(recipe):
        files[READABLE_NAME] = script.encode("utf-8")
        shipped = wrap_lzma_b85(script, script.splitlines()[0]).encode("utf-8")
    else:
        shipped = script.encode("utf-8")
    manifest = {"packager_version": __version__, "recipe_sha256": recipe.sha256, "date": date,
                "collect": {"policy": pol.to_dict(), "allow_partial": allow, "against": comp_spec},
                "smoke_env": smoke_env(recipe)}
    out = Rendered(files, manifest)
    if has_seed_logs(folder):
        comp = Comparison.from_dict(comp_spec) if comp_spec else comparison_from_recipe(recipe, folder, pol)
        col = collect(recipe, folder, shipped, allow_partial=allow, comparison=comp, policy=pol)
        name, png, digest, note = _plot(folder, col, recipe, stored)
        if png is not None:
            files[name] = png
            manifest["collect"]["plot_data_sha256"] = digest
        if note:
            col.notes.append(note.split(" (`pip")[0])
        submission = submission_results(recipe, date, col, shipped)
        readme = readme_results(recipe, script, col, shipped, pol, name, note)
        out.collected, out.notes = col, col.notes
    else:
        submission = submission_pending(recipe, date)
        readme = readme_pending(recipe, script, date)
    files.update({
        SCRIPT_NAME: shipped,
        "submission.json": (json.dumps(submission, indent=2) + "\n").encode(),
        "README.md": readme.encode("utf-8"),
        "requirements.txt": ("\n".join(reqs) + "\n").encode(),
        "recipe.yaml": recipe.text.encode("utf-8"),
    })
    return out


def rerender(folder: Path) -> Rendered:
    """Render a record folder again from its own recipe.yaml and the choices in its manifest."""
    from packager.recipe import load_recipe

    folder = Path(folder)
    if not (folder / "recipe.yaml").exists():
        raise UserError("no recipe.yaml in this folder", str(folder))
    return render_folder(load_recipe(folder / "recipe.yaml"), folder)


def stale_files(folder: Path, files: dict[str, bytes] | None = None) -> list[str]:
    """Generated files whose bytes on disk differ from a fresh render (missing ones included)."""
    folder = Path(folder)
    from packager.writer import read_manifest

    files = rerender(folder).files if files is None else files
    recorded = (read_manifest(folder) or {}).get("files", {})
    stale = {name for name, data in files.items()
             if not (folder / name).is_file() or (folder / name).read_bytes() != data}
    return sorted(stale | (set(recorded) - set(files)))
