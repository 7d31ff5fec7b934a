"""A newcomer's first hour, as README.md tells it: the set-up and smoke commands, as written, for
every shipped recipe (one end-to-end run each: every eval path, TTT included), the test command
that .ci/run runs, and one-line errors for the usual mistakes in a rendered script."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from packager.cli import pack
from tests.test_recipes import FINAL_LINE

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def set_up_commands() -> tuple[str, str]:
    """README's two set-up commands: install and render, run the tests."""
    setup, tests = bash_blocks(section("Set up"))[:2]
    return setup, tests


def smoke_command() -> str:
    (command,) = bash_blocks(section("Smoke run"))
    return command


def test_readme_starts_with_the_two_set_up_commands_and_ci_runs_them():
    text = README.read_text()
    setup, tests = set_up_commands()
    assert bash_blocks(text)[:2] == [setup, tests]  # the first two commands of the README
    steps = setup.split(" && ")
    assert steps[0] == "pip install torch==2.13.0" and steps[1].startswith("pip install -e ")
    assert [s for s in steps if not s.startswith("pip ")] == ["golf-pack recipes/naive_baseline.yaml --out my-record"]
    assert "\n" not in setup and "\n" not in tests and tests.startswith("python -m pytest")
    # .ci/run installs what the set-up command installs and runs the test command, verbatim
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert [line for line in ci if line.startswith(("pip ", "python"))] == steps[:2] + [tests]
    assert ".[test" in steps[1] and "pytest-xdist" in (ROOT / "pyproject.toml").read_text()


def run_bash(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the console scripts
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _values(pattern: str, text: str) -> list[str]:
    return re.findall(pattern, text, re.M)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_readme_set_up_and_smoke_commands_run_for_every_recipe(recipe, tmp_path):
    """The set-up command (its installs left out) with the recipe's name, then the smoke command, as
    README writes them: the folder is rendered and named with the next command, and the smoke run goes
    through every eval path of the recipe on two gloo ranks."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    setup = " && ".join(s for s in set_up_commands()[0].split(" && ") if not s.startswith("pip "))
    rendered = run_bash(setup.replace("naive_baseline", recipe), tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.splitlines()[0].startswith("my-record: train_gpt.py ")
    assert rendered.stdout.splitlines()[1].startswith(f"next: {smoke_command()}   (")
    folder = tmp_path / "my-record"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    smoke = run_bash(smoke_command(), tmp_path)
    out, progress = smoke.stdout, smoke.stderr
    assert smoke.returncode == 0, out[-3000:] + progress[-3000:]
    # a short line per phase
    for phase in ("warmup (compile) 1/1", "training step 1/6", "training done at step 6/6", "artifact written",
                  f"eval {FINAL_LINE[recipe]} val_bpb", "final score val_bpb"):
        assert phase in progress, phase
    seed = json.loads((folder / "submission.json").read_text())["seeds"][0]
    assert re.search(rf"^seed {seed}: ok \(done \(final score printed\)\) in [\d.]+ s; log ", out, re.M), out
    assert re.search(rf"^  {FINAL_LINE[recipe]} val_loss:\d+\.\d{{4}} val_bpb:\d+\.\d{{4}}", out, re.M), out
    assert "next: on 8xH100, in my-record: SEED=" in out

    # the saved log: every figure a reviewer reads, consistent with the files
    (log_path,) = folder.glob(f"verify/*/train_seed{seed}.log")
    log = log_path.read_text()
    result = json.loads(log.splitlines()[-1].split("golf_result_json:", 1)[1])
    assert result["eval_path"] == FINAL_LINE[recipe] and result["seed"] == seed and result["steps"] == 6
    assert (result["world_size"], result["grad_accum_steps"], result["device"]) == (2, 4, "2xcpu")
    assert int(_values(r"^model_params:(\d+)$", log)[0]) == result["model_params"] > 0
    assert int(_values(r"^Code size: (\d+) bytes$", log)[0]) == (folder / "train_gpt.py").stat().st_size
    assert int(_values(r"^Total submission size \S+: (\d+) bytes$", log)[0]) == result["bytes_total"]
    assert _values(rf"^{FINAL_LINE[recipe]}_exact val_loss:(\S+) ", log) == [f"{result['val_loss']:.8f}"]
    losses = [float(x) for x in _values(r"^step:\d+/6 train_loss:(\S+)", log)]
    assert len(losses) == 6 and losses[-1] < losses[0], losses  # it trained
    if "ttt" in recipe:  # TTT ran for real: several chunks, at least one update
        ttt = _values(r"^ttt:\w+ .*$", log)
        assert len(ttt) == 1, log[-2000:]
        counts = dict(re.findall(r"(\w+):(\d+)", ttt[0]))
        assert int(counts["steps"]) >= 1, ttt
        if "chunks" in counts:  # score-first and LoRA TTT (pre-eval TTT has epochs)
            assert int(counts["chunks"]) >= 2, ttt
    # the record folder itself: unchanged apart from verify/
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


# ------------------------------------------------------------------------------------ one-line errors

def _load(script: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for recipe in ("naive_baseline", "legal_score_first_ttt", "lora_ttt_swiglu_1xh100"):
        folder = tmp_path_factory.mktemp("mistakes") / recipe
        result = CliRunner().invoke(pack, [str(ROOT / "recipes" / f"{recipe}.yaml"), "--out", str(folder)])
        assert result.exit_code == 0, result.output
        out[recipe] = folder
    return out


MISTAKES = [  # (recipe, environment, the one line)
    ("naive_baseline", {"DATA_PATH": "{tmp}/nowhere"}, "DATA_PATH={tmp}/nowhere holds no fineweb_train_*.bin shards"),
    ("naive_baseline", {"TOKENIZER_PATH": "{tmp}/none.model"}, "TOKENIZER_PATH={tmp}/none.model: no such file"),
    ("naive_baseline", {"VOCAB_SIZE": "2048"}, "VOCAB_SIZE=2048 does not match the tokenizer's 1024 pieces"),
    ("naive_baseline", {"TRAIN_BATCH_TOKENS": "1000"},
     "TRAIN_BATCH_TOKENS=1000 must be a multiple of 8 x TRAIN_SEQ_LEN = 8192"),
    ("naive_baseline", {"NUM_HEADS": "7"}, "MODEL_DIM=512 must be divisible by NUM_HEADS=7"),
    ("legal_score_first_ttt", {"NUM_LAYERS": "2"}, "VE_LAYERS='9,10' must name distinct blocks of 0..1 (NUM_LAYERS=2)"),
    ("legal_score_first_ttt", {"EVAL_STRIDE": "4096"}, "EVAL_STRIDE=4096 must be in 1..2048 (the evaluation window length)"),
    ("lora_ttt_swiglu_1xh100", {"TTT_CHUNK_LEN": "4096"}, "TTT_CHUNK_LEN=4096 must be at most the eval window 2048"),
]


@pytest.mark.parametrize("recipe, env, message", MISTAKES, ids=[m[2].split("=")[0] for m in MISTAKES])
def test_a_mistake_in_a_setting_or_input_is_one_line_and_writes_nothing(recipe, env, message, folders, tiny_data,
                                                                         tmp_path, monkeypatch, capsys):
    folder = folders[recipe]
    monkeypatch.setenv("DATA_PATH", str(tiny_data / "datasets" / "fineweb10B_sp1024"))
    monkeypatch.setenv("TOKENIZER_PATH", str(tiny_data / "tokenizers" / "fineweb_1024_bpe.model"))
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setenv("LOG_DIR", str(logs))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    script = _load(folder / "train_gpt.py", f"mistake_{recipe}")  # reads the environment, like a run
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"error: {message.format(tmp=tmp_path)}"] and captured.out == ""
    assert list(logs.iterdir()) == [] and {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.slow
def test_under_torchrun_the_mistake_is_printed_once_not_by_every_rank(folders, tiny_data, tmp_path):
    """The model's own check (after the process group is up): one line from rank 0, no traceback of the script."""
    folder = folders["legal_score_first_ttt"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DATA_PATH=str(tiny_data / "datasets" / "fineweb10B_sp1024"), NUM_LAYERS="2", OMP_NUM_THREADS="1",
               TOKENIZER_PATH=str(tiny_data / "tokenizers" / "fineweb_1024_bpe.model"), LOG_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_gpt.py"]
    run = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert [line for line in output.splitlines() if line.startswith("error: ")] == [
        "error: VE_LAYERS='9,10' must name distinct blocks of 0..1 (NUM_LAYERS=2)"], output[-3000:]
    assert not re.search(r'File ".*train_gpt\.py"', output), output[-3000:]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ the tools

def test_golf_verify_names_a_missing_folder_once_with_the_reason(tmp_path):
    from verifier.cli import main

    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(main, [str(missing)])
    assert result.exit_code == 2 and result.output.count(str(missing)) == 1
    assert result.output.strip() == f"golf-verify: cannot read record folder {missing}: no such folder"
    help_text = CliRunner().invoke(main, ["--help"]).output
    probe = " ".join(help_text.split("--probe", 1)[1].split("--ci")[0].split())
    assert "verifier.probes" not in probe and "executes the submission's code" in probe and "minute" in probe


def test_a_rendered_folder_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        result = CliRunner().invoke(pack, [str(ROOT / "recipes" / "naive_baseline.yaml"), "--out", str(tmp_path / "r")])
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "r" / "train_gpt.py").stat().st_mode & 0o777 == 0o644


def test_smoke_settings_come_from_the_features_and_the_manifest_carries_them(folders):
    from packager.recipe import load_recipe
    from packager.smoke import smoke_env
    from verifier.folder import golf_pack_smoke_env
    from verifier.rerun import SMOKE_OVERRIDES

    base = smoke_env(load_recipe(ROOT / "recipes" / "naive_baseline.yaml"))
    # the baseline has no feature of its own to shrink: the shared sizes only, at the recipe's vocabulary
    assert base.items() <= SMOKE_OVERRIDES.items() and {"NUM_LAYERS", "ITERATIONS"} <= set(base)
    assert "VOCAB_SIZE" not in base
    lora = smoke_env(load_recipe(ROOT / "recipes" / "lora_ttt_swiglu_1xh100.yaml"))
    assert {k: lora[k] for k in ("TTT_CHUNK_LEN", "XSA_LAST_N", "SWA_EVERY")} == {
        "TTT_CHUNK_LEN": "128", "XSA_LAST_N": "1", "SWA_EVERY": "2"}
    # features the recipe does not use (its LoRA TTT adapts one document at a time: no TTT_BATCH_DOCS)
    assert "TTT_CHUNK_TOKENS" not in lora and "EVAL_STRIDE" not in lora and "TTT_BATCH_DOCS" not in lora
    for recipe, folder in folders.items():
        assert golf_pack_smoke_env(folder) == smoke_env(load_recipe(folder / "recipe.yaml")), recipe


def test_smoke_refuses_what_it_cannot_run(tmp_path):
    from packager.cli import smoke

    (tmp_path / "foreign").mkdir()
    result = CliRunner().invoke(smoke, [str(tmp_path / "foreign")])
    assert result.exit_code == 2 and "no recipe.yaml: not a golf-pack folder" in result.output
    assert "golf-verify FOLDER --rerun --smoke" in result.output
    result = CliRunner().invoke(smoke, [str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.slow
def test_a_smoke_run_that_fails_exits_1_with_the_scripts_error_line(folders, tiny_data, tmp_path):
    import shutil

    from packager.cli import smoke

    folder = tmp_path / "broken"
    shutil.copytree(folders["naive_baseline"], folder)
    script = folder / "train_gpt.py"
    script.write_text(script.read_text().replace('os.environ.get("COMPRESSOR", \'zlib\')',
                                                 'os.environ.get("COMPRESSOR", \'brotli\')'))
    data = ["--data-path", str(tiny_data / "datasets" / "fineweb10B_sp1024"),
            "--tokenizer-path", str(tiny_data / "tokenizers" / "fineweb_1024_bpe.model")]
    result = CliRunner().invoke(smoke, [str(folder), "--nproc", "1", *data])
    assert result.exit_code == 1, result.output
    assert re.search(r"^seed 1337: failed \(startup \(no training step yet\)\) in [\d.]+ s$", result.stdout, re.M)
    assert "  error: COMPRESSOR='brotli' is not available in this script" in result.stdout.splitlines()
    assert "next:" not in result.stdout and not list(folder.glob("verify/*/train_seed*.log"))


def test_the_console_script_routes_smoke(monkeypatch):
    from packager import cli

    calls = []
    monkeypatch.setitem(cli.SUBCOMMANDS, "smoke", lambda **kw: calls.append(kw) or sys.exit(0))
    monkeypatch.setattr(sys, "argv", ["golf-pack", "smoke", "my-record", "--nproc", "1"])
    with pytest.raises(SystemExit):
        cli.pack_main()
    assert calls == [{"args": ["my-record", "--nproc", "1"], "prog_name": "golf-pack smoke"}]
