"""Collecting results: seed logs -> submission.json, README.md and loss_curves.png.

Most tests use synthetic logs written exactly as a rendered script writes them (docs/DESIGN.md)
for the script golf-pack rendered into the folder, so they run in milliseconds. One slow test
trains two real seeds on CPU (tiny dataset) and checks every number against those logs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from packager.cli import pack
from packager.collect import CollectError
from packager.folder import rerender, script_hparams, stale_files
from packager.recipe import load_recipe
from verifier import verify_folder
from verifier.analysis import load_canonical

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "recipes" / "naive_baseline.yaml"
SP1024_TOKENS = int(load_canonical()["tokenizers"]["sp1024"]["val_tokens"])
RATIO = 1.2244 / 2.0727  # bpb per nat of sp1024 on the FineWeb validation split

# Checks about what golf-pack writes: none of them may report an error on a collected folder.
METADATA_CHECKS = {"schema.submission", "score.missing", "score.mean", "score.per-seed", "score.units",
                   "size.code-bytes", "size.total-bytes", "size.artifact-cap", "seed.mismatch", "code.provenance",
                   "files.missing", "files.unreadable", "status.pending"}


# ------------------------------------------------------------------------------ helpers

def write_recipe(tmp: Path, *, seeds=(1, 2, 3), extra_identity: str = "", name: str = "nb.yaml") -> Path:
    text = BASELINE.read_text()
    text = text.replace("seeds: [1337]", f"seeds: [{', '.join(map(str, seeds))}]")
    text = text.replace("  track: 10min_16mb\n", f'  track: 10min_16mb\n  date: "2026-04-01"\n{extra_identity}')
    path = tmp / name
    path.write_text(text)
    return path


def render(tmp: Path, recipe: Path, *args) -> Path:
    records = tmp / "records"
    result = CliRunner().invoke(pack, [str(recipe), "--records", str(records), *args])
    assert result.exit_code == 0, result.output
    return Path(result.output.split(": train_gpt.py ")[0])


def synth_log(folder: Path, seed: int, *, val_loss: float, total: int, printed_seed: int | None = None,
              truncate: bool = False, overrides: dict | None = None, code: bytes | None = None,
              train_ms: int = 598_000, steps: int = 13_700) -> str:
    """A log as the folder's train_gpt.py writes it on 8xH100 (golf_result_json last)."""
    recipe = load_recipe(folder / "recipe.yaml")
    code = (folder / "train_gpt.py").read_bytes() if code is None else code
    sha = hashlib.sha256(code).hexdigest()
    shown_seed = seed if printed_seed is None else printed_seed
    val_bpb = val_loss * RATIO
    values = dict(recipe.values, seed=shown_seed, **(overrides or {}))
    model = total - len(code)
    result = {
        "seed": shown_seed, "val_loss": val_loss, "val_bpb": val_bpb, "eval_path": "final_int8_zlib_roundtrip",
        "roundtrip_val_loss": val_loss, "roundtrip_val_bpb": val_bpb, "bytes_model": model,
        "bytes_code": len(code), "bytes_total": total, "code_sha256": sha, "train_time_ms": train_ms,
        "eval_time_ms": 1400 + seed, "total_eval_time_s": 1.5, "steps": steps, "iterations": 20000,
        "step_avg_ms": round(train_ms / steps, 2), "stopped_early": True, "world_size": 8, "grad_accum_steps": 1,
        "model_params": 17059912, "val_tokens": SP1024_TOKENS, "device": "8xNVIDIA H100 80GB HBM3",
        "torch": "2.9.1+cu128", "python": "3.12.3", "packager_version": "0.1.0", "recipe_sha256": recipe.sha256,
    }
    lines = [f"code_sha256:{sha} code_bytes:{len(code)}", f"recipe_sha256:{recipe.sha256} packager:0.1.0",
             "Running Python 3.12.3 PyTorch 2.9.1+cu128 device:8xNVIDIA H100 80GB HBM3"]
    lines += [f"hparam {hp.name}={values[hp.name]}" for hp in sorted(script_hparams(recipe), key=lambda h: h.name)]
    lines += [f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={values['tokenizer_path']}",
              f"val_loader:shards pattern={values['data_path']}/fineweb_val_*.bin tokens:{SP1024_TOKENS}",
              "model_params:17059912", "world_size:8 grad_accum_steps:1", f"seed:{shown_seed}"]
    for step in (0, 6000, 12000):
        lines.append(f"step:{step}/20000 val_loss:{val_loss + 4.0 / (1 + step / 1000):.4f} "
                     f"val_bpb:{(val_loss + 4.0 / (1 + step / 1000)) * RATIO:.4f} train_time:{step * 43}ms "
                     f"step_avg:43.60ms")
    for step in (1, 200, 4000, 8000, 12000):
        lines.append(f"step:{step}/20000 train_loss:{val_loss + 5.0 / (1 + step / 500):.4f} "
                     f"train_time:{step * 43}ms step_avg:43.60ms")
    if truncate:
        return "\n".join(lines) + "\n"
    lines += [f"stopping_early: wallclock_cap train_time:{train_ms}ms step:{steps}/20000",
              f"Serialized model int8+zlib: {model} bytes", f"Code size: {len(code)} bytes",
              f"Total submission size int8+zlib: {total} bytes",
              f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{1400 + seed}ms",
              f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}",
              "total_eval_time:1.5s", "golf_result_json:" + json.dumps(result, sort_keys=True)]
    return "\n".join(lines) + "\n"


LOSSES = {1: 2.07001234, 2: 2.07212345, 3: 2.06923456}
TOTALS = {1: 15_861_001, 2: 15_863_489, 3: 15_859_777}


def add_logs(folder: Path, seeds=(1, 2, 3), **kw) -> None:
    for seed in seeds:
        (folder / f"train_seed{seed}.log").write_text(synth_log(folder, seed, val_loss=LOSSES[seed],
                                                                total=TOTALS[seed], **kw))


def collect_cli(folder: Path, *args):
    return CliRunner().invoke(pack, [str(folder), *args])


def errors_of(report, checks=None) -> list:
    return [f for f in report.findings if f.severity == "error" and (checks is None or f.check in checks)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture()
def three(tmp_path) -> Path:
    """A rendered folder with three complete synthetic seed logs, not yet collected."""
    folder = render(tmp_path, write_recipe(tmp_path))
    add_logs(folder)
    return folder


# ------------------------------------------------------------------------------ complete results

def test_collect_writes_means_std_max_and_per_seed_figures(three):
    logs = {p.name: p.read_bytes() for p in three.glob("*.log")}
    result = collect_cli(three)
    assert result.exit_code == 0, result.output
    assert "results complete over 3 seed(s)" in result.output
    sub = json.loads((three / "submission.json").read_text())
    losses = [LOSSES[s] for s in (1, 2, 3)]
    bpbs = [x * RATIO for x in losses]
    assert sub["status"] == "complete" and sub["seeds"] == [1, 2, 3]
    assert sub["val_loss"] == round(statistics.mean(losses), 8)
    assert sub["val_bpb"] == round(statistics.mean(bpbs), 8)
    assert sub["val_loss_std"] == round(statistics.stdev(losses), 8)  # sample std (n - 1)
    assert sub["val_bpb_std"] == round(statistics.stdev(bpbs), 8)
    assert sub["bytes_total"] == max(TOTALS.values()) == 15_863_489
    assert sub["bytes_code"] == (three / "train_gpt.py").stat().st_size
    assert sub["hardware"] == "8xNVIDIA H100 80GB HBM3"
    assert sub["software"] == {"python": "3.12.3", "torch": "2.9.1+cu128", "golf-pack": "0.1.0"}
    for seed in (1, 2, 3):
        entry = sub["seed_results"][str(seed)]
        assert entry == {"val_bpb": round(LOSSES[seed] * RATIO, 8), "val_loss": LOSSES[seed],
                         "artifact_bytes": TOTALS[seed], "bytes_code": sub["bytes_code"], "train_time_ms": 598000,
                         "eval_time_ms": 1400 + seed, "steps": 13700, "step_avg_ms": round(598000 / 13700, 2),
                         "log": f"train_seed{seed}.log"}
    assert "comparison" not in sub and "significance" not in sub
    assert "Mean val_bpb" in sub["blurb"] and f"{statistics.mean(bpbs):.4f}" in sub["blurb"]
    # the logs were only read
    assert {p.name: p.read_bytes() for p in three.glob("*.log")} == logs
    # golf-verify (strict profile) finds nothing wrong with the collected folder
    report = verify_folder(three)
    assert errors_of(report) == [], [(f.check, f.message) for f in errors_of(report)]
    assert not [f for f in report.findings if f.severity == "warning"], report.findings
    # the plot is generated, in the manifest and linked from README
    manifest = json.loads((three / ".golf-pack.json").read_text())
    readme = (three / "README.md").read_text()
    if (three / "loss_curves.png").exists():
        assert "loss_curves.png" in manifest["files"] and "](loss_curves.png)" in readme
        assert (three / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "No plot: matplotlib is not installed" in readme
    # collecting again is a no-op, and a fresh render equals the folder
    again = collect_cli(three)
    assert again.exit_code == 0 and "up to date" in again.output
    assert stale_files(three) == []


def test_readme_has_summary_tables_significance_command_credits(three):
    assert collect_cli(three).exit_code == 0
    readme = (three / "README.md").read_text()
    losses = [LOSSES[s] for s in (1, 2, 3)]
    bpbs = [x * RATIO for x in losses]
    summary = f"**val_bpb {statistics.mean(bpbs):.8f} ± {statistics.stdev(bpbs):.8f}**"
    assert summary in readme
    for seed in (1, 2, 3):
        row = (f"| {seed} | {LOSSES[seed]:.8f} | {LOSSES[seed] * RATIO:.8f} | {TOTALS[seed]:,} | "
               f"{(three / 'train_gpt.py').stat().st_size:,} | 598,000 | {1400 + seed:,} | 13,700 | "
               f"{598000 / 13700:.2f} | [train_seed{seed}.log](train_seed{seed}.log) |")
        assert row in readme
    assert (f"| **mean ± std** | {statistics.mean(losses):.8f} ± {statistics.stdev(losses):.8f} | "
            f"{statistics.mean(bpbs):.8f} ± {statistics.stdev(bpbs):.8f} | max 15,863,489 |") in readme
    assert "No comparison record is named" in readme
    assert "| model | 9 layers, width 512, 8 heads / 4 KV heads, MLP 2x relu2" in readme
    assert "| matrix_lr | `0.04` | `MATRIX_LR` |" in readme
    assert "SEED=2 torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    assert "Run-time overrides" not in readme
    assert "## Based on" in readme and "records/track_10min_16mb/2026-03-17_NaiveBaseline" in readme


def test_overrides_in_the_logs_show_in_readme_and_run_command(tmp_path):
    folder = render(tmp_path, write_recipe(tmp_path, seeds=(1,)))
    add_logs(folder, seeds=(1,), overrides={"matrix_lr": 0.03, "tie_embeddings": False})
    result = collect_cli(folder)
    assert result.exit_code == 0, result.output
    assert "note: train_seed1.log: ran with hyperparameters other than the recipe's: matrix_lr=0.03, " \
           "tie_embeddings=False" in result.output
    readme = (folder / "README.md").read_text()
    assert "| matrix_lr | `0.04` | `0.03` |" in readme and "| tie_embeddings | `True` | `False` |" in readme
    assert "SEED=1 TIE_EMBEDDINGS=0 MATRIX_LR=0.03 torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    # the headline says so: these scores are not those of the recipe's techniques table
    headline = readme.split("## Results")[0]
    assert ("> **Not the recipe as written.** The runs set `matrix_lr=0.03`, `tie_embeddings=False` by environment "
            "variable (the recipe: `matrix_lr=0.04`, `tie_embeddings=True`)") in headline


# ------------------------------------------------------------------------------ significance

def test_recipe_compare_to_values_gives_welch_figures(tmp_path):
    ref = [2.0800, 2.0810, 2.0795]
    extra = f"  compare_to:\n    record: previous best\n    val_loss: {ref}\n"
    folder = render(tmp_path, write_recipe(tmp_path, extra_identity=extra))
    add_logs(folder)
    assert collect_cli(folder).exit_code == 0
    sub = json.loads((folder / "submission.json").read_text())
    new = [LOSSES[s] for s in (1, 2, 3)]
    from scipy import stats

    expected = stats.ttest_ind(new, [r - 0.005 for r in ref], equal_var=False, alternative="less")
    sig = sub["significance"]
    assert sig["policy"] == "readme-2026-03" and sig["method"] == "welch-one-sided" and sig["unit"] == "nats"
    assert sig["p_value"] == pytest.approx(expected.pvalue, rel=1e-5)
    assert sig["t"] == pytest.approx(-expected.statistic, abs=1e-4)
    assert sig["delta_nats"] == round(statistics.mean(ref) - statistics.mean(new), 8)
    assert sig["delta_bpb"] == pytest.approx(sig["delta_nats"] * RATIO, abs=1e-8)
    assert sig["significant"] == bool(expected.pvalue < 0.01)
    assert sub["comparison"] == {"record": "previous best", "val_loss": round(statistics.mean(ref), 8),
                                 "seed_val_losses": ref}
    readme = (folder / "README.md").read_text()
    assert "Compared with `previous best` (3 seeds" in readme
    assert f"p = {sig['p_value']:.6g}" in readme
    assert ("**significant**" if sig["significant"] else "**not significant**") in readme
    # golf-verify recomputes the test from the submission's comparison and agrees
    report = verify_folder(folder)
    found = report.by_check("stats.significance")
    assert found and found[0].evidence["p"] == pytest.approx(expected.pvalue, rel=1e-6)
    assert errors_of(report) == [] if sig["significant"] else True


def test_against_a_folder_overrides_and_is_remembered(tmp_path, three):
    assert collect_cli(three).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    folder = render(other, write_recipe(other, seeds=(1, 2)))
    (folder / "train_seed1.log").write_text(synth_log(folder, 1, val_loss=2.06, total=15_000_000))
    (folder / "train_seed2.log").write_text(synth_log(folder, 2, val_loss=2.061, total=15_000_000))
    result = collect_cli(folder, "--against", str(three))
    assert result.exit_code == 0, result.output
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["comparison"]["record"] == "2026-04-01_NaiveBaseline"  # outside this repository: the name only
    assert sub["comparison"]["seed_val_losses"] == [LOSSES[s] for s in (1, 2, 3)]
    assert sub["significance"]["delta_nats"] == pytest.approx(statistics.mean(LOSSES.values()) - 2.0605, abs=1e-8)
    # remembered: a plain re-render reproduces the same files
    assert stale_files(folder) == []
    assert collect_cli(folder).output.splitlines()[0].endswith("up to date")
    # --against recipe goes back to the recipe (which names none)
    assert collect_cli(folder, "--against", "recipe").exit_code == 0
    assert "comparison" not in json.loads((folder / "submission.json").read_text())


def test_compare_to_a_records_path_is_resolved_from_the_repository_root(tmp_path, three):
    assert collect_cli(three).exit_code == 0
    rel = "records/track_10min_16mb/2026-04-01_NaiveBaseline"
    recipe = write_recipe(tmp_path, seeds=(1, 2), name="second.yaml", extra_identity=f"  compare_to: {rel}\n")
    recipe.write_text(recipe.read_text().replace("slug: NaiveBaseline", "slug: Second"))
    folder = render(tmp_path, recipe)
    assert folder.name == "2026-04-01_Second"
    (folder / "train_seed1.log").write_text(synth_log(folder, 1, val_loss=2.07, total=15_000_000))
    (folder / "train_seed2.log").write_text(synth_log(folder, 2, val_loss=2.071, total=15_000_000))
    assert collect_cli(folder).exit_code == 0
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["comparison"]["record"] == rel
    assert sub["significance"]["significant"] is False
    assert "**not significant**" in (folder / "README.md").read_text()


# ------------------------------------------------------------------------------ refusing bad logs

def refused(folder: Path, *args) -> str:
    before = snapshot(folder)
    result = collect_cli(folder, *args)
    assert result.exit_code == 2, result.output
    assert snapshot(folder) == before  # nothing written, logs untouched
    return result.output


def test_wrong_seed_is_an_error_naming_the_log(three):
    (three / "train_seed3.log").write_text(synth_log(three, 3, val_loss=LOSSES[3], total=TOTALS[3],
                                                     printed_seed=2))
    out = refused(three)
    assert "error: train_seed3.log: wrong seed: the log prints seed 2 but its name says seed 3" in out
    assert "nothing was written" in out
    out = refused(three, "--allow-partial")  # never allowed
    assert "train_seed3.log: wrong seed" in out


def test_incomplete_run_is_an_error_or_left_out_with_allow_partial(three):
    (three / "train_seed2.log").write_text(synth_log(three, 2, val_loss=LOSSES[2], total=TOTALS[2], truncate=True))
    out = refused(three)
    assert "error: train_seed2.log: incomplete run: no golf_result_json line" in out
    # reported once: the seed's missing complete log is the same problem
    assert [line for line in out.splitlines() if "seed 2" in line or "seed2" in line] == [
        "error: train_seed2.log: incomplete run: no golf_result_json line (the run failed or was cut off); run seed 2 "
        "again (`SEED=2 torchrun --standalone --nproc_per_node=8 train_gpt.py` writes a new log beside it) or pass "
        "--allow-partial"]
    result = collect_cli(three, "--allow-partial")
    assert result.exit_code == 0, result.output
    sub = json.loads((three / "submission.json").read_text())
    assert sub["status"] == "partial" and sub["seeds"] == [1, 2, 3] and set(sub["seed_results"]) == {"1", "3"}
    assert sub["val_loss"] == round(statistics.mean([LOSSES[1], LOSSES[3]]), 8)  # seed 2 is not averaged in
    readme = (three / "README.md").read_text()
    assert "**Partial results.** Seed 2 of the recipe's seeds [1, 2, 3] has no complete log" in readme
    assert "Not counted: `train_seed2.log`: incomplete run: no golf_result_json line" in readme
    # golf-verify does not let a partial folder pass
    report = verify_folder(three)
    assert {f.check for f in errors_of(report)} >= {"schema.submission", "seed.count"}


def test_final_line_missing_is_an_incomplete_run(three):
    text = synth_log(three, 1, val_loss=LOSSES[1], total=TOTALS[1])
    text = "\n".join(line for line in text.splitlines() if not line.startswith("final_")) + "\n"
    (three / "train_seed1.log").write_text(text)
    assert "train_seed1.log: incomplete run: no final score line" in refused(three)


def test_an_incomplete_run_beside_a_complete_log_of_its_seed_is_left_out(three):
    """A failed run, then the seed run again (its log is train_seed2_run2.log): collecting just works."""
    complete = (three / "train_seed2.log").read_text()
    (three / "train_seed2.log").write_text(synth_log(three, 2, val_loss=LOSSES[2], total=TOTALS[2], truncate=True))
    (three / "train_seed2_run2.log").write_text(complete)
    result = collect_cli(three)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "train_seed2.log" in line]
    assert notes == ["note: train_seed2.log: incomplete run: no golf_result_json line (the run failed or was cut off); "
                     "not counted"]
    sub = json.loads((three / "submission.json").read_text())
    assert sub["status"] == "complete" and sub["seed_results"]["2"]["log"] == "train_seed2_run2.log"
    assert "Not counted: `train_seed2.log`: incomplete run" in (three / "README.md").read_text()
    assert errors_of(verify_folder(three), METADATA_CHECKS) == []


def test_missing_seed_is_an_error_or_partial(tmp_path):
    folder = render(tmp_path, write_recipe(tmp_path))
    add_logs(folder, seeds=(1, 3))
    out = refused(folder)
    assert "error: train_seed2.log: seed 2 has no complete log" in out and "--allow-partial" in out
    result = collect_cli(folder, "--allow-partial")
    assert result.exit_code == 0 and "note: seed 2: no complete log; results are partial" in result.output
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["status"] == "partial" and set(sub["seed_results"]) == {"1", "3"}
    assert "Partial: seed 2 missing." in sub["blurb"]
    assert "SEED=2 torchrun --standalone --nproc_per_node=8 train_gpt.py   # not run yet" in \
        (folder / "README.md").read_text()
    # remembered: once seed 2 is in, a plain run completes the results
    add_logs(folder, seeds=(2,))
    result = collect_cli(folder)
    assert result.exit_code == 0 and "results complete over 3 seed(s)" in result.output
    assert errors_of(verify_folder(folder)) == []


def test_duplicate_logs_and_unknown_seeds_are_errors(three):
    shutil.copy(three / "train_seed1.log", three / "train_seed1_run2.log")
    out = refused(three)
    assert "train_seed1.log: seed 1 has 2 complete logs (train_seed1.log, train_seed1_run2.log)" in out
    (three / "train_seed1_run2.log").unlink()
    (three / "train_seed9.log").write_text(synth_log(three, 9, val_loss=2.0, total=15_000_000))
    assert "train_seed9.log: seed 9 is not one of the recipe's seeds [1, 2, 3]" in refused(three, "--allow-partial")
    # a rerun kept in a subfolder is not collected
    (three / "reruns").mkdir()
    (three / "train_seed9.log").rename(three / "reruns" / "train_seed9.log")
    assert collect_cli(three).exit_code == 0


def test_logs_of_other_code_are_refused(three):
    (three / "train_seed1.log").write_text(synth_log(three, 1, val_loss=LOSSES[1], total=TOTALS[1],
                                                     code=b"# another script\n"))
    out = refused(three)
    assert "train_seed1.log: ran train_gpt.py with sha256" in out and "re-run" in out


def test_a_file_that_is_not_a_log_is_ignored_with_a_note(three):
    (three / "notes_gpu.txt").write_text("nothing to see\n")  # 'notes*' is never a log
    (three / "nvidia_smi.txt").write_text("Tue Mar 17 | NVIDIA-SMI 550.54 |\n")
    result = collect_cli(three)
    assert result.exit_code == 0 and "note: nvidia_smi.txt: not a training log; ignored" in result.output


def test_collect_api_lists_every_problem(three):
    from packager.collect import collect
    from packager.folder import render_folder

    (three / "train_seed3.log").write_text(synth_log(three, 3, val_loss=1.0, total=1, truncate=True))
    shutil.copy(three / "train_seed1.log", three / "train_seed4.log")
    recipe = load_recipe(three / "recipe.yaml")
    with pytest.raises(CollectError) as info:
        collect(recipe, three, (three / "train_gpt.py").read_bytes())
    problems = info.value.problems
    assert len(problems) == 2, problems  # seed 3's incomplete run is its only problem: reported once
    assert problems[0].startswith("train_seed4.log: wrong seed: the log prints seed 1 but its name says seed 4")
    assert problems[1].startswith("train_seed3.log: incomplete run: no golf_result_json line")
    with pytest.raises(CollectError):
        render_folder(recipe, three)


# ------------------------------------------------------------------------------ hand edits after collecting

def test_hand_edits_after_collecting_are_caught(three):
    assert collect_cli(three).exit_code == 0
    readme = three / "README.md"
    readme.write_text(readme.read_text().replace("**val_bpb 1.22", "**val_bpb 1.21"))
    assert stale_files(three) == ["README.md"]
    result = collect_cli(three)
    assert result.exit_code == 2 and "README.md: edited by hand" in result.output
    check = collect_cli(three, "--check")
    assert check.exit_code == 1 and "README.md: differs from what golf-pack renders now" in check.output
    script = three / "train_gpt.py"
    script.write_text(script.read_text() + "# tuned after the runs\n")
    report = verify_folder(three)
    assert {"code.provenance", "size.code-bytes"} <= {f.check for f in errors_of(report)}


# ------------------------------------------------------------------------------ the plot

def test_plot_is_skipped_without_matplotlib_and_reused_when_data_unchanged(three, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = collect_cli(three)
    assert result.exit_code == 0, result.output
    assert "note: No plot: matplotlib is not installed" in result.output
    assert not (three / "loss_curves.png").exists()
    assert "No plot: matplotlib is not installed" in (three / "README.md").read_text()
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert collect_cli(three).exit_code == 0
    png = (three / "loss_curves.png").read_bytes()
    assert "](loss_curves.png)" in (three / "README.md").read_text()
    # without matplotlib again, the same data keep the same PNG: byte-identical re-render
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert stale_files(three) == []
    assert rerender(three).files["loss_curves.png"] == png


def test_pending_folder_stays_pending(tmp_path):
    folder = render(tmp_path, write_recipe(tmp_path))
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["status"] == "pending" and "val_bpb" not in sub
    assert "**Results: pending.**" in (folder / "README.md").read_text()
    report = verify_folder(folder)
    assert [f.check for f in report.findings] == ["status.pending"]
    assert stale_files(folder) == []


# ------------------------------------------------------------------------------ real runs (CPU, tiny data)

_GOLF = re.compile(r"^golf_result_json:(.*)$", re.M)


def check_collected_from_real_logs(folder: Path, seeds: tuple[int, ...], world_size: int) -> None:
    """golf-pack collects the real seed logs in `folder` (a CPU smoke run's: tests/test_rerun.py runs
    them); every number in submission.json and README.md is checked against the logs."""
    logs = {seed: (folder / f"train_seed{seed}.log").read_text() for seed in seeds}
    res = {seed: json.loads(_GOLF.search(text).group(1)) for seed, text in logs.items()}
    result = collect_cli(folder)
    assert result.exit_code == 0, result.output
    sub = json.loads((folder / "submission.json").read_text())
    readme = (folder / "README.md").read_text()
    losses = [res[s]["val_loss"] for s in seeds]
    bpbs = [res[s]["val_bpb"] for s in seeds]
    # every number in submission.json, against the logs
    assert sub["status"] == "complete"
    assert sub["val_loss"] == round(statistics.mean(losses), 8) and sub["val_bpb"] == round(statistics.mean(bpbs), 8)
    assert sub["val_loss_std"] == round(statistics.stdev(losses), 8)
    assert sub["val_bpb_std"] == round(statistics.stdev(bpbs), 8)
    assert sub["bytes_total"] == max(r["bytes_total"] for r in res.values())
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size == res[seeds[0]]["bytes_code"]
    assert sub["hardware"] == f"{world_size}xcpu" and sub["software"]["torch"] == res[seeds[0]]["torch"]
    for seed in seeds:
        r, entry, text = res[seed], sub["seed_results"][str(seed)], logs[seed]
        assert entry["val_loss"] == round(r["val_loss"], 8) and entry["val_bpb"] == round(r["val_bpb"], 8)
        exact = re.search(r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)$", text, re.M)
        assert math.isclose(entry["val_loss"], float(exact.group(1)), abs_tol=1e-8)
        assert math.isclose(entry["val_bpb"], float(exact.group(2)), abs_tol=1e-8)
        total = int(re.search(r"^Total submission size int8\+zlib: (\d+) bytes$", text, re.M).group(1))
        assert entry["artifact_bytes"] == total == r["bytes_total"]
        assert entry["bytes_code"] == int(re.search(r"^Code size: (\d+) bytes$", text, re.M).group(1))
        assert (entry["train_time_ms"], entry["eval_time_ms"], entry["steps"], entry["step_avg_ms"]) == \
               (r["train_time_ms"], r["eval_time_ms"], r["steps"], r["step_avg_ms"])
        assert entry["log"] == f"train_seed{seed}.log"
        # ... and in README
        assert (f"| {seed} | {r['val_loss']:.8f} | {r['val_bpb']:.8f} | {r['bytes_total']:,} | "
                f"{r['bytes_code']:,} | {r['train_time_ms']:,.0f} | {r['eval_time_ms']:,.0f} | {r['steps']:,} | "
                f"{r['step_avg_ms']:.2f} | [train_seed{seed}.log](train_seed{seed}.log) |") in readme
        assert f"SEED={seed} " in readme and f"--nproc_per_node={world_size} train_gpt.py" in readme
    assert (f"**val_bpb {statistics.mean(bpbs):.8f} ± {statistics.stdev(bpbs):.8f}**, val_loss "
            f"{statistics.mean(losses):.8f} ± {statistics.stdev(losses):.8f} nats") in readme
    assert f"max {sub['bytes_total']:,}" in readme
    assert "| num_layers | `9` | `2` |" in readme  # the smoke overrides are stated, not hidden
    assert "> **Not the recipe as written.**" in readme and "`num_layers=2`" in readme.split("## Results")[0]
    # golf-verify: nothing wrong with what golf-pack wrote; the only errors are those of a CPU smoke run
    # (tiny validation set instead of FineWeb's, two seeds where the policy wants three)
    report = verify_folder(folder)
    assert errors_of(report, METADATA_CHECKS) == [], [(f.check, f.message) for f in errors_of(report)]
    assert {f.check for f in errors_of(report)} <= {"data.val-tokens", "seed.count"}
    # the generated files re-render byte for byte; the logs were not touched
    assert stale_files(folder) == []
    assert {s: (folder / f"train_seed{s}.log").read_text() for s in seeds} == logs
    if (folder / "loss_curves.png").exists():
        assert "](loss_curves.png)" in readme


# ------------------------------------------------------------------------------ the script stays the script

def test_rendering_the_folder_keeps_the_script_the_logs_ran(tmp_path):
    """The script's header names the recipe's slug, not the file it was read from: re-rendering the
    folder's own recipe.yaml gives the same bytes, so every log keeps matching train_gpt.py."""
    folder = render(tmp_path, write_recipe(tmp_path, seeds=(1,)))
    script = (folder / "train_gpt.py").read_bytes()
    first = script.splitlines()[0]
    assert script.startswith(b"# Generated by golf-pack") and b".yaml" not in first and b" from recipe " in first
    result = collect_cli(folder)
    assert result.exit_code == 0 and result.output.splitlines()[0].endswith("up to date"), result.output
    add_logs(folder, seeds=(1,))
    assert collect_cli(folder).exit_code == 0
    assert (folder / "train_gpt.py").read_bytes() == script


def test_self_extracting_script_collects_with_its_wrapper_bytes(tmp_path):
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text() + "\ncode:\n  wrap: lzma_b85\n")
    folder = render(tmp_path, recipe)
    add_logs(folder)
    assert collect_cli(folder).exit_code == 0
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size < (folder / "train_gpt_readable.py").stat().st_size
    assert errors_of(verify_folder(folder)) == []


def test_a_renamed_recipe_file_renders_the_same_script(tmp_path, three):
    # The header names the recipe's slug, not its file, so a renamed recipe still matches the logs.
    shutil.copy(tmp_path / "nb.yaml", tmp_path / "renamed.yaml")
    before = snapshot(three)
    result = CliRunner().invoke(pack, [str(tmp_path / "renamed.yaml"), "--records", str(tmp_path / "records")])
    assert result.exit_code == 0 and "results complete over 3 seed(s)" in result.output, result.output
    after = snapshot(three)
    assert after["train_gpt.py"] == before["train_gpt.py"]
    assert {k: v for k, v in after.items() if k.endswith(".log")} == {k: v for k, v in before.items() if k.endswith(".log")}


def test_a_short_run_plots_every_point_and_names_only_drawn_curves():
    pytest.importorskip("matplotlib")
    from packager.plot import FEW_POINTS, figure

    data = {"version": 2, "seeds": [
        {"seed": 1, "log": "a", "train": [[1, 6.9], [2, 6.8], [3, 6.7]], "val": [[6, 6.6]], "final": [6, 6.5]},
        {"seed": 2, "log": "b", "train": [[s, 7.0 - s / 1000] for s in range(1, 200)], "val": [], "final": [None, 1]}]}
    (ax,) = figure(data, "t").axes
    drawn = {line.get_label(): line for line in ax.get_lines()}
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == list(drawn) == ["seed 1 train", "seed 1 validation", "seed 1 final scored val_loss",
                                     "seed 2 train"]
    for label, line in drawn.items():  # a curve of few points shows each point, a single point included
        assert (line.get_marker() not in (None, "None", "")) == (len(line.get_xdata()) <= FEW_POINTS), label

