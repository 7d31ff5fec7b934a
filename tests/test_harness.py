"""The CPU harness (verifier/harness): what it reads from a folder, the data it writes, and the
contract of a run: a copy, offline, the folder untouched, the reason a script cannot run on CPU."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from verifier.harness import data as hdata
from verifier.harness.proc import network_isolation
from verifier.harness.run import run_record
from verifier.harness.script import entry_script, plan_folder, read_knobs

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT.parent / "shared" / "upstream" / "records" / "track_10min_16mb"


# ---------------------------------------------------------------- reading a folder

def test_knobs_are_read_from_plain_minified_and_helper_code():
    source = textwrap.dedent('''
        import os
        _d = 'WARMUP_STEPS'
        def _e(k, d, t=str):
            v = os.environ.get(k, str(d))
            return t(v)
        class Hyperparameters:
            iterations = int(os.environ.get("ITERATIONS", 20000))
            warmup_steps = int(os.environ.get(_d, 20))
            model_dim = _e("MODEL_DIM", 512, int)
            data = os.environ["DATA_PATH"]
            seed = int(os.getenv("SEED", "1337"))
    ''')
    knobs = read_knobs(source)
    assert {k: v.default for k, v in knobs.items()} == {"ITERATIONS": "20000", "WARMUP_STEPS": "20",
                                                        "MODEL_DIM": "512", "DATA_PATH": None, "SEED": "'1337'"}
    assert knobs["ITERATIONS"].attrs == {"iterations"} and knobs["MODEL_DIM"].attrs == {"model_dim"}


def test_plan_takes_the_logged_run_configuration_then_shrinks_it(tmp_path):
    (tmp_path / "train_gpt.py").write_text(textwrap.dedent('''
        import os
        class Hyperparameters:
            num_layers = int(os.environ.get("NUM_LAYERS", 9))
            ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
            qk_gain_init = float(os.environ.get("QK_GAIN_INIT", 1.5))
            data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp4096")
            vocab_size = int(os.environ.get("VOCAB_SIZE", 4096))
    '''))
    (tmp_path / "train_seed1.log").write_text("Hyperparameters:\n  data_path: /somewhere/else\n  num_layers: 11\n"
                                              "  qk_gain_init: 5.25\n  ttt_enabled: True\n  vocab_size: 4096\n")
    plan = plan_folder(tmp_path)
    assert plan.entry == "train_gpt.py" and plan.run_config_source == "the logs' hyperparameters"
    assert plan.run_config == {"NUM_LAYERS": "11", "QK_GAIN_INIT": "5.25", "TTT_ENABLED": "1", "VOCAB_SIZE": "4096"}
    assert plan.env["NUM_LAYERS"] == "2" and plan.env["QK_GAIN_INIT"] == "5.25" and plan.env["TTT_ENABLED"] == "1"
    assert "ITERATIONS" not in plan.env  # the script does not read it
    assert plan.vocab == 1024 and plan.env["VOCAB_SIZE"] == "1024" and plan.profiles == ["tiny"]  # shrunk too


def test_readme_command_is_the_run_configuration_when_logs_print_none(tmp_path):
    (tmp_path / "train_gpt.py").write_text("import os\nn = os.environ.get('NUM_LOOPS', '1')\n"
                                           "s = os.environ.get('EVAL_STYLES', 'a')\n")
    (tmp_path / "README.md").write_text("Run:\n\n```\nNUM_LOOPS=3 EVAL_STYLES=x,y \\\n  torchrun --nproc_per_node=8 "
                                        "train_gpt.py\n```\n")
    plan = plan_folder(tmp_path)
    assert plan.run_config == {"NUM_LOOPS": "3", "EVAL_STYLES": "x,y"} and plan.run_config_source == "the README command"


def test_entry_script_and_a_folder_without_one(tmp_path):
    assert entry_script(tmp_path) is None and "nothing to run" in plan_folder(tmp_path).problem
    (tmp_path / "train_gpt_v5.py").write_text("print(1)\n")
    (tmp_path / "lossless_caps.py").write_text("")
    assert entry_script(tmp_path) == "train_gpt_v5.py"


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/upstream is not present beside the repository")
def test_public_records_are_planned():
    lzma = plan_folder(UPSTREAM / "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2")  # a self-extracting script
    assert lzma.run_config["VOCAB_SIZE"] == "8192" and lzma.vocab == 1024  # the vocabulary shrinks like the model
    assert "depth-recurrence" in lzma.profiles and lzma.env["NUM_LAYERS"] == "3"
    caseops = plan_folder(UPSTREAM / "2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT")
    assert caseops.reads_byte_sidecar and caseops.run_config["CASEOPS_ENABLED"] == "1"
    assert "varlen-lora-ttt" in caseops.profiles and caseops.env["TTT_EVAL_SEQ_LEN"] == "128"
    assert plan_folder(UPSTREAM / "2026-03-19_int6_STE QAT_ MLP_bigram _U_Net").problem


PEP701_PAYLOAD = 'xs = ["a", "b"]\nprint(f"{", ".join(xs)} {xs[0]!r:>{len(xs) * 2}}")\nraise SystemExit(f"line {__import__("sys")._getframe().f_lineno}")\n'


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="this Python runs PEP 701 f-strings as written")
def test_a_script_for_python_312_runs_with_its_fstrings_rewritten_in_the_copy(tmp_path):
    import base64
    import lzma
    import subprocess

    folder, copy = tmp_path / "record", tmp_path / "copy"
    folder.mkdir()
    blob = base64.b85encode(lzma.compress(PEP701_PAYLOAD.encode())).decode()
    (tmp_path / "wrapper.py").write_text(f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n')
    (folder / "train_gpt.py").symlink_to(tmp_path / "wrapper.py")  # a link: the copy must not write through it
    plan = plan_folder(folder)
    assert plan.problem is None and "f-strings rewritten for Python" in plan.notes[0]
    shutil.copytree(folder, copy, symlinks=True)
    plan.prepare_copy(copy)
    assert (tmp_path / "wrapper.py").read_text().startswith("import lzma") and not (copy / "train_gpt.py").is_symlink()
    out = subprocess.run([sys.executable, "train_gpt.py"], cwd=copy, capture_output=True, text=True, timeout=60)
    assert (out.stdout, out.stderr) == ("a, b  'a'\n", "line 3\n")  # same values, same line numbers


# ---------------------------------------------------------------- data

def test_probe_tokens_keep_documents_and_the_prefix(tmp_path):
    tok = hdata.load_tokenizer(tmp_path, 1024, tmp_path / "cache")
    assert tok.source == "trained" and tok.vocab == 1024 and tok.bos == 1
    val = hdata.random_split(tok, 4001)
    assert val[0] == tok.bos and 10 < int((val == tok.bos).sum()) < 200
    assert set(np.unique(val).tolist()) <= set(tok.ordinary.tolist()) | {tok.bos}
    changed = hdata.change_from(tok, val, 2500)
    assert (changed[:2500] == val[:2500]).all() and ((changed[2500:] != val[2500:]) == (val[2500:] != tok.bos)).all()
    data = hdata.write_data(tmp_path / "d", tok, val, val, sidecar=True)
    assert data.dataset == tmp_path / "d" / "datasets" / "fineweb10B_sp1024"
    assert data.tokenizer == tmp_path / "d" / "tokenizers" / "fineweb_1024_bpe.model"
    assert (hdata.read_tokens(data.dataset / "fineweb_val_000000.bin") == val).all()
    sidecar = hdata.read_tokens(data.dataset / "fineweb_val_bytes_000000.bin")
    assert len(sidecar) == len(val) and (sidecar[val == tok.bos] == 0).all() and sidecar.max() > 1
    again = hdata.load_tokenizer(tmp_path, 1024, tmp_path / "cache")
    assert again.path == tok.path  # trained once, then cached


# ---------------------------------------------------------------- a run

CONTRACT_SCRIPT = '''
import os, socket
import torch
import triton
import triton.language as tl

@triton.jit
def double_kernel(x_ptr, n, BLOCK: tl.constexpr):
    pass

print("interfaces", socket.if_nameindex(), flush=True)
try:
    socket.create_connection(("93.184.216.34", 80), timeout=3).close()
    print("network reached", flush=True)
except OSError as exc:
    print("network unreachable", exc.errno, flush=True)
print("env", os.environ.get("HF_HUB_OFFLINE"), os.environ.get("https_proxy"), flush=True)
with open("written_by_the_script.txt", "w") as fh:
    fh.write("a run writes into its copy only")
x = torch.ones(4, device="cuda").cuda() * 2
print("device", x.device, torch.cuda.is_available(), torch.cuda.get_device_name(0), flush=True)
double_kernel[(1,)](x, 4, BLOCK=4)
'''


def test_a_run_is_offline_in_a_copy_and_names_what_cannot_run(tmp_path, monkeypatch):
    folder = tmp_path / "record"
    folder.mkdir()
    (folder / "train_gpt.py").write_text(CONTRACT_SCRIPT)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    plan = plan_folder(folder)
    tok = hdata.load_tokenizer(folder, plan.vocab, tmp_path / "cache")
    data = hdata.write_data(tmp_path / "data", tok, hdata.random_split(tok, 5000), hdata.random_split(tok, 999), False)
    run = run_record(plan, data, tmp_path / "work", timeout=120)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "the record folder was written to"
    assert (tmp_path / "work" / "record" / "written_by_the_script.txt").is_file()
    out = run.stdout
    assert "env 1 None" in out  # offline variables set, the caller's proxy not passed on
    assert "device cpu True cpu (golf-verify CPU harness)" in out
    if network_isolation()[0]:
        assert "interfaces [(1, 'lo')]" in out and "network unreachable" in out and run.network != "none"
    assert not run.ok and run.failure().startswith("not runnable on CPU: Triton kernel double_kernel"), \
        run.failure()
    assert os.environ.get("GOLF_HARNESS") is None  # nothing leaked into the caller


def test_coverage_table_counts_and_explains():
    from verifier.harness.coverage import render_table

    ok = {"record": "a", "ran": True, "judged": True, "seconds": 12.3, "not_checked": [], "failed": [], "brief": [],
          "verdicts": dict.fromkeys(("probe.causality", "probe.single-pass", "probe.normalization", "probe.isolation"),
                                    "pass")}
    bad = dict(ok, record="b", verdicts=dict(ok["verdicts"], **{"probe.single-pass": "fail"}),
               brief=["single-pass: scored-twice at 8129 (final)"])
    broken = dict(ok, record="c", ran=False, judged=False, not_checked=["not runnable: needs | pipes"],
                  verdicts=dict.fromkeys(ok["verdicts"], "not checked"))
    warned = dict(bad, record="w", verdicts=dict(ok["verdicts"], **{"probe.single-pass": "warning"}))
    text = render_table([ok, bad, broken, warned])
    assert "| b | yes | yes | pass | FAIL | pass | pass | 12 | single-pass: scored-twice at 8129 (final) |" in text
    assert "| w | yes | yes | pass | warn | pass | pass | 12 |" in text
    assert "| c | no | no | n/c | n/c | n/c | n/c | 12 | not runnable: needs / pipes |" in text
    assert text.endswith("4 record folders: 3 run end to end under the harness, 3 judged by all four probes.")
