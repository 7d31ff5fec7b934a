"""The CI files participants copy: the GitHub workflow and the pre-commit hook definitions.

Their structure is checked (keys, triggers, console scripts that exist in pyproject.toml), and
their shell glue is run with stand-ins for git and golf-verify, so that the folder selection is
tested, not only parsed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "golf-verify.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"


def console_scripts() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, re.M))
    return tomllib.loads(text)["project"]["scripts"]


def load_workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as the boolean True
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflow_structure():
    wf = load_workflow()
    assert wf["name"] and set(wf) >= {"name", "on", "jobs"}
    assert "records/**" in wf["on"]["pull_request"]["paths"]
    assert wf["permissions"] == {"contents": "read"}
    (job,) = wf["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert re.fullmatch(r"3\.\d+", str(setup["with"]["python-version"]))
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "pip install" in runs and "golf-verify --ci" in runs
    assert set(job["env"]) == {"GOLF_PACK_GIT", "GOLF_PACK_REF"}
    for step in steps:
        assert set(step) <= {"name", "id", "uses", "with", "run", "env", "if"}, step
        assert ("uses" in step) != ("run" in step), step
    # every command the workflow runs from golf-pack is a console script of this project
    scripts = console_scripts()
    for name in re.findall(r"\b(golf-[a-z]+)\b", runs):
        assert name in scripts, name
    assert scripts["golf-verify"] == "verifier.cli:main"


def test_hooks_structure():
    hooks = yaml.safe_load(HOOKS.read_text())
    assert isinstance(hooks, list) and hooks
    scripts = console_scripts()
    ids = set()
    for hook in hooks:
        assert {"id", "name", "entry", "language"} <= set(hook), hook
        assert hook["id"] not in ids
        ids.add(hook["id"])
        assert hook["language"] in ("python", "system")
        assert set(hook) <= {"id", "name", "description", "entry", "language", "files", "exclude",
                             "pass_filenames", "require_serial", "args", "types", "stages"}
        argv = shlex.split(hook["entry"])
        tools = re.findall(r"\b(golf-[a-z]+)\b", hook["entry"])
        assert tools and all(t in scripts for t in tools), tools
        assert "--ci" in hook["entry"]
        assert argv[0] in scripts or argv[:2] == ["bash", "-c"]
        files = re.compile(hook["files"])
        assert files.search("records/track_10min_16mb/2026-04-01_Mine/train_seed1.log")
        assert files.search("records/track_non_record_16mb/2026-04-01_Mine/README.md")
        assert not files.search("packager/cli.py") and not files.search("records/README.md")
    assert "golf-verify" in ids


@pytest.fixture()
def shims(tmp_path):
    """A bin folder with a golf-verify that records its arguments and fails when told to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls.txt"
    shim = bin_dir / "golf-verify"
    shim.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {shlex.quote(str(record))}\n"
                    f"[ -e FAIL ] && exit 1\nexit 0\n")
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir, record, env


def make_records(root: Path) -> None:
    for folder in ("track_10min_16mb/2026-04-01_A", "track_10min_16mb/2026-04-02_B",
                   "track_non_record_16mb/2026-04-03_C"):
        (root / "records" / folder).mkdir(parents=True)
        (root / "records" / folder / "submission.json").write_text("{}")


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("xargs") is None, reason="needs bash and xargs")
def test_hook_entry_runs_golf_verify_on_the_changed_folders_only(tmp_path, shims):
    _, record, env = shims
    make_records(tmp_path)
    hook = next(h for h in yaml.safe_load(HOOKS.read_text()) if h["id"] == "golf-verify")
    staged = ["records/track_10min_16mb/2026-04-01_A/README.md", "records/track_10min_16mb/2026-04-01_A/x.log",
              "records/track_non_record_16mb/2026-04-03_C/submission.json"]
    files = re.compile(hook["files"])
    argv = shlex.split(hook["entry"]) + [f for f in staged if files.search(f)]
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert record.read_text().splitlines() == [
        "--ci --format text records/track_10min_16mb/2026-04-01_A records/track_non_record_16mb/2026-04-03_C"]
    (tmp_path / "FAIL").write_text("")
    assert subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True).returncode != 0
    # a deleted folder's files are not passed on
    record.unlink()
    argv = shlex.split(hook["entry"]) + ["records/track_10min_16mb/2026-04-09_Gone/README.md"]
    assert subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True).returncode == 0
    assert not record.exists()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("xargs") is None, reason="needs bash and xargs")
def test_workflow_steps_select_changed_folders(tmp_path, shims):
    bin_dir, record, env = shims
    make_records(tmp_path)
    # git stands in for the pull request's diff
    changed = ["records/track_10min_16mb/2026-04-02_B/train_seed1.log",
               "records/track_10min_16mb/2026-04-02_B/README.md", "records/README.md"]
    git = bin_dir / "git"
    git.write_text("#!/bin/sh\n" + "".join(f"echo {shlex.quote(c)}\n" for c in changed))
    git.chmod(0o755)
    out = tmp_path / "github_output"
    env = dict(env, BASE_SHA="0" * 40, GITHUB_OUTPUT=str(out))
    steps = load_workflow()["jobs"]["verify"]["steps"]
    select = next(s for s in steps if s.get("id") == "changed")
    verify = next(s for s in steps if "golf-verify --ci" in s.get("run", ""))
    assert verify["if"] == "steps.changed.outputs.count != '0'"
    run = subprocess.run(["bash", "-e", "-c", select["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text().strip() == "count=1"
    run = subprocess.run(["bash", "-e", "-c", verify["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert record.read_text().splitlines() == ["--ci records/track_10min_16mb/2026-04-02_B"]


def test_ci_flag_verifies_folders(tmp_path):
    """The real golf-verify accepts what the CI files pass (record folders after --ci)."""
    make_records(tmp_path)
    from click.testing import CliRunner

    from verifier.cli import main

    result = CliRunner().invoke(main, ["--ci", "--format", "text", str(tmp_path / "records/track_10min_16mb/2026-04-01_A")])
    assert "record folder(s)" in result.output, result.output
    assert result.exit_code in (0, 1)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_workflow_installs_golf_verify_from_its_repository_at_a_pinned_ref(tmp_path):
    """From git at GOLF_PACK_REF, never a package-index name; click and jsonschema first, golf-pack last
    with --no-deps (the order in which pip reports no resolver errors); placeholders fail loudly."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    for name in ("python", "golf-verify"):
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >> {shlex.quote(str(calls))}\n")
        (bin_dir / name).chmod(0o755)
    job = load_workflow()["jobs"]["verify"]
    step = next(s for s in job["steps"] if s.get("name") == "Install golf-verify")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", GOLF_PACK_GIT="https://git.example/golf-pack",
               GOLF_PACK_REF="0123456789abcdef0123456789abcdef01234567")
    run = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert calls.read_text().splitlines() == [
        "python -m pip install click>=8.1 jsonschema>=4.20",
        "python -m pip install --no-deps golf-pack @ git+https://git.example/golf-pack@0123456789abcdef0123456789abcdef01234567",
        "golf-verify --version"]
    placeholders = dict(env, **job["env"])
    run = subprocess.run(["bash", "-e", "-c", step["run"]], env=placeholders, capture_output=True, text=True)
    assert run.returncode == 1 and "::error::set GOLF_PACK_GIT and GOLF_PACK_REF" in run.stdout

