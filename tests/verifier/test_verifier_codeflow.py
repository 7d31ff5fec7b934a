"""verifier.codeflow: the validation-data model of a script (sources, flow, score-first decisions)."""

from __future__ import annotations

import textwrap

from verifier.codeflow import K, V, analyse_source

HEAD = '''
import os, torch
import torch.nn.functional as F

class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    val_files = os.path.join(data_path, "fineweb_val_*.bin")
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
'''


def program(body: str):
    prog = analyse_source(HEAD + textwrap.dedent(body))
    assert prog.problem is None, prog.problem
    return prog


def sites(body: str):
    return [(s.func.name, s.kind, s.scored_first) for s in program(body).val_training()]


def test_values_are_followed_from_the_validation_files_through_renames_and_helpers():
    prog = program('''
    def fetch(pattern):
        return torch.load(pattern)

    def main():
        h = Hyperparameters()
        stream = fetch(h.val_files)
        window = stream[10:20].to("cuda")
        other = fetch(h.train_files)
    ''')
    main = next(f for f in prog.funcs if f.name == "main")
    labels = {d.name: d.labels for d in main.defs}
    assert labels["stream"] & V and labels["window"] & V and not labels["other"] & V
    assert "val_files" in prog.tainted_attrs and "train_files" not in prog.tainted_attrs


def test_sizes_are_not_data_and_reused_names_stay_apart():
    found = sites('''
    def main(model, opt, loader):
        h = Hyperparameters()
        val_tokens = torch.load(h.val_files)
        n = val_tokens.numel() - 1
        for step in range(n // 1024):
            x, y = loader.next_batch()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        with torch.no_grad():
            x = val_tokens[:-1]
            y = val_tokens[1:]
            total = F.cross_entropy(model(x), y)
    ''')
    assert found == []  # the training batch x, y is not the validation x, y defined after it


def test_pre_eval_training_through_a_helper_with_any_name():
    found = sites('''
    def one_pass(model, opt, toks):
        for s in range(0, toks.numel(), 64):
            loss = F.cross_entropy(model(toks[s:s + 64]), toks[s + 1:s + 65])
            loss.backward()
            opt.step()

    def main(model, opt):
        h = Hyperparameters()
        toks = torch.load(h.val_files)
        for _ in range(3):
            one_pass(model, opt, toks)

    main(None, None)
    ''')
    assert found == [("one_pass", "pre-eval", False)]


def test_score_first_at_any_call_level_with_a_nested_epoch_loop():
    found = sites('''
    def score_chunk(model, toks, lo, hi, sums):
        with torch.inference_mode():
            sums[0] += F.cross_entropy(model(toks[lo:hi]), toks[lo + 1:hi + 1], reduction="sum").item()

    def train_chunk(model, opt, toks, lo, hi):
        loss = F.cross_entropy(model(toks[lo:hi]), toks[lo + 1:hi + 1])
        loss.backward()
        opt.step()

    def main(model, opt):
        h = Hyperparameters()
        toks = torch.load(h.val_files)
        sums = [0.0]
        for ci in range(100):
            lo, hi = ci * 64, ci * 64 + 64
            score_chunk(model, toks, lo, hi, sums)
            for _ep in range(3):
                train_chunk(model, opt, toks, lo, hi)
    ''')
    assert found == [("train_chunk", "pre-eval", True)]


def test_a_helper_also_reached_without_scoring_is_flagged():
    found = sites('''
    def train_chunk(model, opt, toks, lo, hi):
        F.cross_entropy(model(toks[lo:hi]), toks[lo + 1:hi + 1]).backward()

    def main(model, opt):
        toks = torch.load(Hyperparameters().val_files)
        for ci in range(10):
            with torch.no_grad():
                total = 0.0
                total += F.cross_entropy(model(toks[ci:ci + 8]), toks[ci + 1:ci + 9]).item()
            train_chunk(model, opt, toks, ci, ci + 8)
        train_chunk(model, opt, toks, 0, 64)

    main(None, None)
    ''')
    assert found == [("train_chunk", "pre-eval", False)]


def test_score_first_through_a_callback_and_a_function_passed_as_an_argument():
    found = sites('''
    def run_chunks(model, toks, train_fn):
        acc = [0.0]
        for lo in range(0, 1024, 64):
            score_windows(model, toks, lo, acc)
            train_fn(lo)

    def ttt(model, opt, val_tokens):
        def train_fn(lo):
            for _ in range(3):
                F.cross_entropy(model(val_tokens[lo:lo + 64]), val_tokens[lo + 1:lo + 65]).backward()
        return run_chunks(model, val_tokens, train_fn)

    def timed(label, fn, *args):
        return fn(*args)

    def main(model, opt):
        toks = torch.load(Hyperparameters().val_files)
        timed("legal_ttt", ttt, model, opt, toks)

    main(None, None)
    ''')
    assert found == [("train_fn", "pre-eval", True)]


def test_slot_warmup_and_diagnostic_kinds():
    kinds = {f: k for f, k, _ in sites('''
    def eval_slot(model, val_tokens):
        delta = torch.zeros(1, 512, requires_grad=True)
        opt = torch.optim.AdamW([delta], lr=0.01)
        for s in range(0, 1024, 64):
            F.cross_entropy(model(val_tokens[s:s + 64]) + delta, val_tokens[s + 1:s + 65]).backward()
            opt.step()

    def warm_up_compile(model, val_tokens):
        for _ in range(2):
            F.cross_entropy(model(val_tokens[:64]), val_tokens[1:65]).backward()

    def probe_quality(model, val_tokens):
        probe = torch.nn.Linear(512, 1024)
        opt = torch.optim.Adam(probe.parameters())
        for _ in range(10):
            F.cross_entropy(probe(model.hidden(val_tokens[:64])), val_tokens[1:65]).backward()
            opt.step()
        return 0.0
    ''')}
    assert kinds == {"eval_slot": "slot", "warm_up_compile": "warmup", "probe_quality": "diagnostic"}


def test_gates_and_their_defaults_for_the_logs():
    prog = program('''
    def adapt(model, val_tokens):
        F.cross_entropy(model(val_tokens[:8]), val_tokens[1:9]).backward()

    def slot(model, val_tokens, args):
        use_slot = getattr(args, "slot_enabled", False)
        if use_slot:
            F.cross_entropy(model(val_tokens[:8]), val_tokens[1:9]).backward()

    def main(model, args):
        toks = torch.load(Hyperparameters().val_files)
        if args.ttt_enabled:
            adapt(model, toks)
        slot(model, toks, args)

    main(None, None)
    ''')
    gates = {s.func.name: dict(s.gates) for s in prog.val_training()}
    assert gates["adapt"]["ttt_enabled"] == "0" and gates["slot"]["slot_enabled"] is False
    assert prog.config_of("ttt_enabled") == ("0", "TTT_ENABLED")


def test_target_keyed_hash_is_labelled():
    prog = program('''
    def keys(toks, pos, mask):
        h = toks[pos - 2] * 31
        h ^= toks[pos - 1] * 17
        ctx = h & mask
        full = (h ^ (toks[pos] * 13)) & mask
        return ctx, full
    ''')
    f = next(f for f in prog.funcs if f.name == "keys")
    labels = {d.name: d.labels for d in f.defs}
    assert labels["full"] & K and not labels["ctx"] & K


def test_each_element_of_a_split_carries_its_own_labels():
    prog = program('''
    SPLITS = ("train", "val")

    def shards(path):
        return {s: sorted(glob.glob(f"{path}/fineweb_{s}_*.bin")) for s in SPLITS}

    def pair(h):
        return torch.load(h.train_files), torch.load(h.val_files)

    def main():
        h = Hyperparameters()
        files = shards(h.data_path)
        tr, va = pair(h)
        first, *rest = pair(h)
        pats = [f"{h.data_path}/fineweb_{s}_*.bin" for s in ("train", "val")]
        tr_pat, va_pat = pats
        tr_files, va_files, whole = files["train"], files["val"], files
    ''')
    main = next(f for f in prog.funcs if f.name == "main")
    labels = {d.name: d.labels & V for d in main.defs}
    assert labels == {"h": 0, "s": 0, "files": V, "tr": 0, "va": V, "first": V, "rest": V, "pats": V, "tr_pat": 0,
                      "va_pat": V, "tr_files": 0, "va_files": V, "whole": V}


def test_lambdas_called_through_a_container_take_its_arguments():
    found = sites('''
    def tune(model, toks, opt):
        loss = F.cross_entropy(model(toks[:-1]), toks[1:])
        loss.backward()
        opt.step()

    def main():
        h, model = Hyperparameters(), build_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        stream = torch.load(h.val_files)
        train = torch.load(h.train_files)
        steps = {"val": lambda m, t: tune(m, t, opt)}
        warm = lambda m, t: tune(m, t, opt)
        steps["val"](model, stream)
        warm(model, train)

    main()
    ''')
    assert found == [("tune", "pre-eval", False)]
