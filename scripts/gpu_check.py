"""The device check: one command that runs the CUDA paths of the rendered scripts and records the numbers.

    python scripts/gpu_check.py --prepare                 # here, once: the public script and the wheels
    python scripts/gpu_check.py --out gpu_check.json      # on one H100/H200 (about 8 minutes)
    python scripts/gpu_check.py --cpu --out cpu.json      # the same steps, tiny, on CPU (tests/test_gpu_check.py)

Steps, each reported as ok / failed / not checked (with why), never skipped silently:
  data      synthetic FineWeb-format shards (`golf-data tiny`, sp1024; CaseOps sp8192 for the frontier
            recipe): no download.
  baseline  the rendered naive baseline and the public root train_gpt.py, the same steps on the same
            shards, one process each: both step_avg figures and their ratio (rendered / public; goal <= 1).
            On CPU the public script runs under golf-verify's CPU harness (it needs CUDA otherwise).
  ttt       the legal score-first TTT recipe through training, export and final evaluation: attention path,
            step_avg, evaluation time, artifact bytes, val_bpb.
  frontier  the #1855 recipe (LQER, sparse gate, phased TTT, CaseOps), the same figures; its pinned
            FlashAttention 3 when installed, else SDPA (said in the result).
  rerun     `golf-verify <baseline folder> --rerun --nproc 1` with a short wallclock: its external timers.

The public script is read from --public-script (default .gpu_check/public_train_gpt.py, an ignored folder
that `--prepare` fills from ../shared/upstream/train_gpt.py; it is never committed). The device image has
torch but not every dependency: `--prepare` downloads the missing wheels into .whl/ (see the device
README); the device command installs them first:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
      PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_check.py --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout that is not installed (the device machine)

from packager.recipe import load_recipe  # noqa: E402
from verifier.harness.proc import LAUNCHER_VARS, OFFLINE_ENV, PROXY_VARS, run_logged  # noqa: E402
from verifier.harness.run import copy_record  # noqa: E402
from verifier.logs import parse_log  # noqa: E402

PUBLIC_DEFAULT = ROOT / ".gpu_check" / "public_train_gpt.py"
UPSTREAM_ROOT_SCRIPT = ROOT.parent / "shared" / "upstream" / "train_gpt.py"
FOLDERS = {  # step -> the rendered record folder it runs (tests/test_records.py keeps them fresh)
    "baseline": "records/track_10min_16mb/2026-11-22_NaiveBaseline",
    "ttt": "records/track_10min_16mb/2026-03-25_11L_EMA_GPTQ-lite_LegalScoreFirstTTT",
    "frontier": "records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack",
}
# The wheels the device image lacks (it has torch, numpy, triton); pinned so one version of each travels.
WHEELS = ("zstandard==0.23.0", "jsonschema==4.23.0", "jsonschema-specifications==2024.10.1", "referencing==0.35.1",
          "rpds-py==0.22.3", "attrs==24.3.0", "sentencepiece==0.2.0", "click==8.1.8", "pyyaml==6.0.2",
          "scipy==1.14.1", "brotli==1.1.0")
# Short fixed budgets on one GPU: the same step counts for both baseline scripts, a fixed count for the
# recipes (training time is not the point there: the CUDA paths through export and evaluation are).
GPU_ENV = {"VAL_LOSS_EVERY": "0", "MAX_WALLCLOCK_SECONDS": "0", "TRAIN_LOG_EVERY": "20"}
GPU_STEPS = {"baseline": 120, "ttt": 60, "frontier": 40}
RERUN_WALLCLOCK_S = {"cuda": 30, "cpu": 0}
MODE_ENV = {"cuda": {}, "cpu": {"OMP_NUM_THREADS": "1"}}  # on CPU one thread per process, as the harness runs
TIMEOUT_S = {"cuda": 420.0, "cpu": 300.0}
PATH_LINE = re.compile(r"^((?:attention|doc_attention|fused_kernels|compile)\S*?:.*)$", re.M)


@dataclass
class Step:
    name: str
    status: str = "not checked"  # ok | failed | not checked
    why: str = ""
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)

    def fail(self, why: str) -> "Step":
        self.status, self.why = "failed", why
        return self


@dataclass
class Run:
    rc: int | None
    seconds: float
    timed_out: bool
    out: str

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def why(self) -> str:
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        tail = [line for line in self.out.strip().splitlines() if line.strip()][-3:]
        return f"exit code {self.rc}: " + " | ".join(tail)


# -- running ---------------------------------------------------------------------------------------------------


def base_env(extra: dict) -> dict:
    """This process's environment, offline, without an outer launcher's or proxy's variables."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and k not in PROXY_VARS}
    env.update(OFFLINE_ENV, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def run_script(script: Path, work: Path, env: dict, mode: str) -> Run:
    """script (with the files beside it) copied into work/, run as one torchrun process."""
    env, timeout = dict(MODE_ENV[mode], **env), TIMEOUT_S[mode]
    copy_record(script.parent, work)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", script.name]
    rc, seconds, timed_out = run_logged(cmd, work, base_env(env), timeout, work / "stdout.txt", work / "stderr.txt")
    out = (work / "stdout.txt").read_text(errors="replace") + (work / "stderr.txt").read_text(errors="replace")
    return Run(rc, seconds, timed_out, out)


def run_public_on_cpu(script: Path, work: Path, data: dict, timeout: float) -> tuple[Run, dict]:
    """The public script under golf-verify's CPU harness (CUDA calls shimmed); (run, the harness's env)."""
    from verifier.harness.data import DataDir, read_tokens
    from verifier.harness.run import run_record
    from verifier.harness.script import plan_folder

    folder = work / "public"
    folder.mkdir(parents=True)
    shutil.copyfile(script, folder / "train_gpt.py")
    plan = plan_folder(folder)
    if plan.problem:
        return Run(None, 0.0, False, plan.problem), {}
    dataset = Path(data["data_path"])
    val = read_tokens(sorted(dataset.glob("fineweb_val_*.bin"))[0])
    tiny = DataDir(dataset.parent.parent, dataset, Path(data["tokenizer_path"]), val)
    run = run_record(plan, tiny, work / "harness", name="public", timeout=timeout, capture=False)
    return Run(run.returncode, run.seconds, run.timed_out, run.stdout + (run.work / "stderr.txt").read_text()), plan.env


# -- reading what a run printed ---------------------------------------------------------------------------------


def kernel_paths(out: str) -> list[str]:
    return sorted(set(m.strip() for m in PATH_LINE.findall(out)))


# -- the steps --------------------------------------------------------------------------------------------------


def step_data(work: Path, given: Path | None, caseops: bool) -> tuple[Step, dict]:
    """(step, {"sp1024": paths[, "caseops8192": paths]}) of the synthetic shards (CaseOps only if a step reads it)."""
    from packager.caseops import build_tiny_caseops
    from verifier.tinydata import build_tiny_dataset

    step = Step("data")
    t0 = time.perf_counter()
    sp1024 = build_tiny_dataset(work / "tiny1024", vocab_size=1024) if given is None else {
        "data_path": str(given / "datasets" / "fineweb10B_sp1024"),
        "tokenizer_path": str(given / "tokenizers" / "fineweb_1024_bpe.model")}
    built = {"sp1024": sp1024}
    if caseops:
        built["caseops8192"] = build_tiny_caseops(work / "tiny8192", vocab_size=8192)
    data = {name: {k: str(d[k]) for k in ("data_path", "tokenizer_path")} for name, d in built.items()}
    step.status, step.seconds = "ok", round(time.perf_counter() - t0, 1)
    step.figures = {name: sorted(p.name for p in Path(d["data_path"]).glob("*.bin")) for name, d in data.items()}
    return step, data


def data_env(paths: dict) -> dict:
    return {"DATA_PATH": paths["data_path"], "TOKENIZER_PATH": paths["tokenizer_path"]}


def step_baseline(mode: str, work: Path, data: dict, public: Path) -> Step:
    step = Step("baseline")
    if not public.is_file():
        step.why = f"{public} is missing: run `python scripts/gpu_check.py --prepare` where ../shared is"
        return step
    rendered = ROOT / FOLDERS["baseline"] / "train_gpt.py"
    t0 = time.perf_counter()
    if mode == "cpu":
        pub, env = run_public_on_cpu(public, work / "public", data["sp1024"], TIMEOUT_S[mode])
    else:
        env = dict(GPU_ENV, ITERATIONS=str(GPU_STEPS["baseline"]), RUN_ID="public")
        pub = run_script(public, work / "public", dict(env, **data_env(data["sp1024"])), mode)
    ours = run_script(rendered, work / "rendered", dict(env, RUN_ID="rendered", **data_env(data["sp1024"])), mode)
    step.seconds = round(time.perf_counter() - t0, 1)
    for name, run in (("public", pub), ("rendered", ours)):
        if not run.ok:
            return step.fail(f"{name} script: {run.why()}")
    a, b = parse_log(ours.out).step_avg_ms, parse_log(pub.out).step_avg_ms
    if a is None or b is None:
        return step.fail("no step_avg line in " + ("the rendered" if a is None else "the public") + " script's output")
    step.status = "ok"
    step.figures = {"env": env, "rendered_step_avg_ms": a, "public_step_avg_ms": b, "ratio": round(a / b, 4),
                    "rendered_paths": kernel_paths(ours.out)}
    return step


def step_recipe(name: str, mode: str, work: Path, data: dict, say) -> Step:
    from verifier.folder import golf_pack_smoke_env

    step = Step(name)
    folder = ROOT / FOLDERS[name]
    paths = data["caseops8192" if name == "frontier" else "sp1024"]
    env = dict(golf_pack_smoke_env(folder)) if mode == "cpu" else dict(GPU_ENV, ITERATIONS=str(GPU_STEPS[name]))
    env.update(data_env(paths), RUN_ID=name)
    if mode == "cuda" and not _has_pinned_kernel(folder):
        env["ATTENTION"] = "sdpa"  # the pin's kernel is not installed here: said in the result, never silent
    t0 = time.perf_counter()
    run = run_script(folder / "train_gpt.py", work / name, env, mode)
    step.seconds = round(time.perf_counter() - t0, 1)
    result = parse_log(run.out).golf_result
    if not run.ok or result is None:
        return step.fail(run.why() if not run.ok else "no golf_result_json line: the run did not reach its end")
    step.status = "ok"
    step.figures = {"attention_override": env.get("ATTENTION"), "paths": kernel_paths(run.out),
                    **{k: result.get(k) for k in ("steps", "step_avg_ms", "train_time_ms", "eval_time_ms",
                                                  "total_eval_time_s", "bytes_total", "bytes_model", "bytes_code",
                                                  "val_bpb", "device", "torch")}}
    say(f"{name}: {step.figures['paths']}")
    return step


def _has_pinned_kernel(folder: Path) -> bool:
    """Whether the FlashAttention the folder's recipe pins is importable here (sdpa needs none)."""
    import importlib.util

    pin = load_recipe(folder / "recipe.yaml").values["attention"]
    module = {"fa3": "flash_attn_interface", "fa2": "flash_attn"}.get(pin)
    return module is None or importlib.util.find_spec(module) is not None


def step_rerun(mode: str, work: Path, data: dict) -> Step:
    step = Step("rerun")
    folder = work / "rerun_folder"
    copy_record(ROOT / FOLDERS["baseline"], folder)
    paths = data["sp1024"]
    seed = load_recipe(folder / "recipe.yaml").seeds[0]
    cmd = [sys.executable, "-c", "import sys; from verifier.cli import main; sys.exit(main())", str(folder),
           "--rerun", "--nproc", "1", "--seeds", str(seed), "--format", "json",
           "--data-path", paths["data_path"], "--tokenizer-path", paths["tokenizer_path"]]
    cmd += ["--smoke"] if mode == "cpu" else ["--env", f"MAX_WALLCLOCK_SECONDS={RERUN_WALLCLOCK_S[mode]}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=base_env(MODE_ENV[mode]), capture_output=True, text=True,
                          timeout=TIMEOUT_S[mode] + 60)
    step.seconds = round(time.perf_counter() - t0, 1)
    try:
        rerun = json.loads(proc.stdout)["summary"]["rerun"]
    except (ValueError, KeyError, TypeError):
        return step.fail(f"golf-verify exit code {proc.returncode}: {proc.stderr.strip()[-300:]}")
    seeds = rerun.get("seeds") or []
    if not seeds or seeds[0].get("status") != "ok":
        return step.fail(f"rerun seed status {seeds[0].get('status') if seeds else 'missing'}")
    step.status = "ok"
    step.figures = {"mode": rerun.get("mode"), "device": seeds[0].get("device"), "timers_s": seeds[0].get("timers_s"),
                    "steps": (seeds[0].get("script") or {}).get("steps")}
    return step


# -- report -----------------------------------------------------------------------------------------------------


def summary_table(steps: list[Step]) -> str:
    rows = ["| step | status | seconds | figures |", "|---|---|---:|---|"]
    for s in steps:
        shown = {k: v for k, v in s.figures.items() if k not in ("env", "paths", "rendered_paths")}
        text = s.why if s.status != "ok" else ", ".join(f"{k}={v}" for k, v in shown.items())
        rows.append(f"| {s.name} | {s.status} | {s.seconds:.1f} | {text.replace('|', '/')} |")
    return "\n".join(rows)


def prepare() -> int:
    """Copy the public root script into the ignored folder; download the wheels the device lacks."""
    if not UPSTREAM_ROOT_SCRIPT.is_file():
        print(f"error: {UPSTREAM_ROOT_SCRIPT}: not found (../shared beside the checkout)", file=sys.stderr)
        return 2
    PUBLIC_DEFAULT.parent.mkdir(exist_ok=True)
    shutil.copyfile(UPSTREAM_ROOT_SCRIPT, PUBLIC_DEFAULT)
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platforms, "-d", str(ROOT / ".whl"), *WHEELS]
    return subprocess.run(cmd).returncode


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="the same steps, tiny, on CPU")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a fresh one under /tmp)")
    p.add_argument("--data", type=Path, default=None, help="an existing `golf-data tiny` folder (sp1024) to reuse")
    p.add_argument("--public-script", type=Path, default=PUBLIC_DEFAULT)
    p.add_argument("--skip", action="append", default=[], choices=["baseline", "ttt", "frontier", "rerun"],
                   help="leave a step out (reported as not checked)")
    p.add_argument("--prepare", action="store_true", help="fill .gpu_check/ and .whl/ here, then stop")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import tempfile

    import torch

    args = parse_args(argv)
    if args.prepare:
        return prepare()
    mode = "cpu" if args.cpu else "cuda"
    if mode == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device: run on the device machine, or pass --cpu", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="golf-gpu-check-"))
    say = lambda text: print(text, flush=True)  # noqa: E731
    data_step, data = step_data(work, args.data, caseops="frontier" not in args.skip)
    plan = [("baseline", lambda: step_baseline(mode, work, data, args.public_script)),
            ("ttt", lambda: step_recipe("ttt", mode, work, data, say)),
            ("frontier", lambda: step_recipe("frontier", mode, work, data, say)),
            ("rerun", lambda: step_rerun(mode, work, data))]
    steps = [data_step]
    for name, run in plan:
        steps.append(Step(name, why="left out (--skip)") if name in args.skip else run())
        say(f"{name}: {steps[-1].status} {steps[-1].why}")
    report = {"mode": mode, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "python": sys.version.split()[0],
              "device": torch.cuda.get_device_name(0) if mode == "cuda" else "cpu",
              "steps": [asdict(s) for s in steps]}
    args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(summary_table(steps))
    return 0 if all(s.status == "ok" for s in steps if s.name not in args.skip) else 1


if __name__ == "__main__":
    sys.exit(main())
