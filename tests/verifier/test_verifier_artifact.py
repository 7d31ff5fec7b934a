"""Artifact accounting as review does it: the shipped script, every file it loads, the model; both totals
when a log counted a compressed code size, and the policy decides which one binds."""

from __future__ import annotations

from verifier import verify_folder
from verifier.artifact import loaded_files
from verifier_builders import SP8192_TOKENS, later_log, script, submission, three_seed_record


def test_loaded_files_anywhere_on_a_line_and_transitively():
    files = {"train_gpt.py": 100, "ngram_tilt.py": 50, "kernels/fused.cpp": 30, "lossless_caps.py": 20,
             "prepare_data.py": 40, "tokenizers/sp.model": 1000, "tok.model": 900, "notes.md": 5}
    sources = {
        "train_gpt.py": "import os\nif h.tilt:from ngram_tilt import State;s=State()\n"
                        "sp = load(os.path.join('./data/tokenizers', 'sp.model'))\n"
                        "t = load(os.path.join(os.path.dirname(__file__), 'tok.model'))\n",
        "ngram_tilt.py": "import subprocess\nsubprocess.run(['g++', '-O3', SRC / 'fused.cpp', '-o', 'lib.so'])\n",
        "prepare_data.py": "import lossless_caps\n",
    }
    found = {x.name: (x.how, x.by, x.line) for x in loaded_files("train_gpt.py", sources, files)}
    assert found == {"ngram_tilt.py": ("import", "train_gpt.py", 2),
                     "kernels/fused.cpp": ("named", "ngram_tilt.py", 2),
                     "tok.model": ("named beside __file__", "train_gpt.py", 4)}


def test_an_uncounted_helper_is_added_to_every_seed(record):
    files = three_seed_record()
    main = "import helper_tilt\n" + files["train_gpt.py"]
    helper = "def apply(x):\n    return x\n" + "# padding\n" * 25_000
    files = three_seed_record(code_len=len(main.encode()), extra_files={"train_gpt.py": main, "helper_tilt.py": helper})
    report = verify_folder(record(files))
    caps = report.by_check("size.artifact-cap")
    assert len(caps) == 3 and all(f.severity == "error" and f.evidence["uncounted"] == ["helper_tilt.py"] for f in caps)
    assert all(f.evidence["total_bytes"] == f.evidence["logged_total"] + len(helper.encode()) for f in caps)
    (h,) = report.by_check("code.helpers")
    assert h.file == "helper_tilt.py" and h.evidence["loaded_by"] == "train_gpt.py" and h.evidence["how"] == "import"


def test_a_compressed_code_size_gives_both_totals_and_the_policy_decides(record):
    readable = script(lines=3000)
    shipped = len(readable.encode())
    total = 15_990_000
    logs = {f"train_seed{s}.log": later_log(seed=s, total=total, code=shipped, code_compressed=25_000,
                                            val_tokens=SP8192_TOKENS) for s in (42, 1337, 2025)}
    files = {"train_gpt.py": readable, "README.md": "x", **logs,
             "submission.json": submission(val_bpb=1.07134229, val_loss=2.76738841, bytes_total=total, seeds=[42, 1337, 2025])}
    folder = record(files)
    readme = verify_folder(folder)
    caps = readme.by_check("size.artifact-cap")
    expected = total - 25_000 + shipped
    assert len(caps) == 3 and {f.severity for f in caps} == {"error"}
    assert all(f.evidence["total_bytes"] == expected and f.evidence["as_logged"] == total for f in caps)
    assert "compressed" in caps[0].message and "policy readme-2026-03 counts the shipped code" in caps[0].message
    board = verify_folder(folder, policy="leaderboard-2026-04")
    assert {f.severity for f in board.by_check("size.artifact-cap")} == {"warning"}
    assert "the other count" in board.by_check("size.artifact-cap")[0].message
