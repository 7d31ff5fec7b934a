"""verifier.logs.parse_log on every log family, our own format, and hostile input."""

from __future__ import annotations

import json
import math

import pytest

from verifier.logs import parse_log, seed_from_name, tokenizer_key
from verifier_builders import early_log, golf_log, later_log


def test_early_family_reads_every_figure():
    s = parse_log(early_log(seed=1337, val_loss=2.07269931, val_bpb=1.22436570, total=15863489, code=47642,
                            train_ms=600038, steps=13780), name="train.log")
    assert s.seed == 1337 and s.seed_source == "printed" and s.filename_seed is None
    assert s.final.family == "final_int8_zlib_roundtrip_exact"
    assert s.final.val_bpb == pytest.approx(1.22436570) and s.final.val_loss == pytest.approx(2.07269931)
    assert s.final.bpb_decimals == 8 and s.final.eval_time_ms == 1401
    # the unlabelled raw total (67 MB) is not the artifact; the labelled one is
    assert s.total_bytes == 15863489 and s.total_label == "int8+zlib" and s.raw_total_bytes == 67224983 + 47642
    assert s.code_bytes == 47642 and s.model_bytes == 15863489 - 47642
    assert s.train_time_ms == 600038 and s.train_time_source == "stop" and s.stop_format == "early"
    assert s.steps == 13780 and s.iterations == 20000 and s.stopped_early
    assert s.val_tokens == 62021632 and s.tokenizer == "sp1024"
    assert s.world_size == 8 and len(s.gpus) == 8 and "H100" in s.gpus[0]
    assert s.last_step_val[2] == 13780
    assert s.ratio == pytest.approx(1.22436570 / 2.07269931)
    assert s.problems == []


def test_later_family_with_phased_ttt_and_block_seed():
    s = parse_log(later_log(seed=42, train_ms=596103, steps=4967), name="train_seed42.log")
    assert s.seed == 42 and s.seed_source == "hparams" and s.filename_seed == 42
    assert s.hparams["val_loss_every"] == "4000"  # a Hyperparameters item, never a result
    assert s.final.family == "quantized_ttt_phased" and s.final.val_bpb == pytest.approx(1.07134229)
    assert [x.kind for x in s.scores].count("diagnostic") == 2
    assert s.code_bytes == 122168 and s.code_bytes_compressed == 27610
    assert s.total_bytes == 15939841 and s.total_label == "quantized+brotli"
    assert s.stop_format == "later" and s.train_time_ms == 596103 and s.steps == 4967
    assert s.gptq_reserve_ms == 4000 and s.gptq_effective_ms == 596000
    assert s.post_stop_calibration_s == pytest.approx(3.4) and s.post_stop_calibration_source == "training"
    assert s.total_eval_time_s == pytest.approx(332.1) and s.eval_timed_s == pytest.approx(332.1)
    assert s.compile_warmup_s == pytest.approx(85.8)
    # end to end without timestamps: timed TTT + diagnostic eval after the artifact + compile warm-up
    assert s.eval_end_to_end_method == "sum"
    assert s.eval_end_to_end_s == pytest.approx(332.1 + 9.559 + 85.8)
    assert s.tokenizer == "sp8192" and s.val_tokens == 40540160 and s.vocab_size == 8192
    assert s.ttt_warmup_unlabelled == []


def test_timestamped_log_measures_end_to_end_from_timestamps():
    text = later_log(timestamps=1776142348.0, ttt_ms=500104, diag_ms=55851, warmup_s=153.3)
    s = parse_log(text, name="logs/train0.txt")
    assert s.timestamped and s.first_ts == pytest.approx(1776142348.0)
    assert s.final.val_bpb == pytest.approx(1.07134229)
    assert s.eval_end_to_end_method == "timestamps"
    assert s.eval_end_to_end_s == pytest.approx(500.104 + 55.851 + 153.3, abs=0.5)
    assert s.seed == 42  # the block item behind a timestamp


def test_unlabelled_warmup_is_noted():
    s = parse_log(later_log(warmup_note=""), name="x.log")
    assert len(s.ttt_warmup_unlabelled) == 1


@pytest.mark.parametrize("line,family,bpb,loss", [
    ("final_int6_roundtrip val_loss:1.9408 val_bpb:1.1494 eval_time:5637ms", "final_int6_roundtrip", 1.1494, 1.9408),
    ("final_int6_sliding_window_exact val_loss:1.90301335 val_bpb:1.12707468", "final_int6_sliding_window_exact", 1.12707468, 1.90301335),
    ("final_sliding_window_eval_exact stride:64 val_loss:1.96369923 val_bpb:1.16301431", "final_sliding_window_eval_exact", 1.16301431, 1.96369923),
    ("quantized val_loss:2.84757723 val_bpb:1.10238588 eval_time:7531ms", "quantized", 1.10238588, 2.84757723),
    ("quantized_sliding_window val_loss:2.80405024 val_bpb:1.08553523 eval_time:83990ms", "quantized_sliding_window", 1.08553523, 2.80405024),
    ("quantized_ttt val_loss:2.79241542 val_bpb:1.08103103 eval_time:368074ms", "quantized_ttt", 1.08103103, 2.79241542),
    ("quantized_ttt_lora val_loss:2.77059090 val_bpb:1.07258208 eval_time:338190ms", "quantized_ttt_lora", 1.07258208, 2.7705909),
    ("legal_ttt_exact val_loss:1.88976776 val_bpb:1.11922988 eval_time:410268ms", "legal_ttt_exact", 1.11922988, 1.88976776),
    ("final_ttt_lora val_loss:2.0153 val_bpb:1.1935 eval_time:72361ms", "final_ttt_lora", 1.1935, 2.0153),
    ("final_sliding val_loss:2.9877 val_bpb:1.1568 (stride=16, T=0.90) eval_time:428712ms", "final_sliding", 1.1568, 2.9877),
    ("final_INT7_zlib_roundtrip val_loss:2.0784 val_bpb:1.2353", "final_INT7_zlib_roundtrip", 1.2353, 2.0784),
    ("final_int8_zlib_roundtrip_exact sliding val_loss:2.02124749 sliding val_bpb:1.19709881",
     "final_int8_zlib_roundtrip_exact_sliding", 1.19709881, 2.02124749),
])
def test_final_score_families(line, family, bpb, loss):
    s = parse_log("seed:7\n" + line + "\n")
    assert s.final is not None and s.final.family == family
    assert s.final.val_bpb == pytest.approx(bpb) and s.final.val_loss == pytest.approx(loss)


def test_last_family_wins_with_its_exact_values():
    text = "\n".join([
        "final_int6_roundtrip val_loss:1.9408 val_bpb:1.1494 eval_time:5637ms",
        "final_int6_roundtrip_exact val_loss:1.94077647 val_bpb:1.14943715",
        "final_int6_sliding_window val_loss:1.9030 val_bpb:1.1271 stride:64 eval_time:69809ms",
        "final_int6_sliding_window_exact val_loss:1.90301335 val_bpb:1.12707468",
        "diagnostic quantized val_loss:2.1 val_bpb:1.3 eval_time:100ms",
    ])
    s = parse_log(text)
    assert s.final.base == "final_int6_sliding_window" and s.final.val_bpb == pytest.approx(1.12707468)
    assert s.final.eval_time_ms == 69809  # from the rounded line of the same family
    assert s.eval_timed_s == pytest.approx(5.637 + 69.809)


def test_progress_and_summary_lines_are_not_finals():
    text = "\n".join([
        "ttt_sliding:done val_loss=1.889768 val_bpb=1.119230 elapsed=409.8s",
        "val_bpb:          1.12278022",
        "  val_loss_every: 0",
        "4000/20000 val_loss: 2.8862 val_bpb: 1.1173",
        "step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms",
    ])
    s = parse_log(text)
    assert s.final is None and s.scores == []
    assert s.last_step_val[1] == pytest.approx(1.2172)


def test_echoed_source_is_never_read_as_results():
    source = "\n".join([
        "=" * 100,
        '"""train_gpt.py"""',
        "import os",
        'log0(f"final_int8_zlib_roundtrip val_loss:{q_val_loss:.4f} val_bpb:{q_val_bpb:.4f} eval_time:{ms}ms")',
        "final_int8_zlib_roundtrip val_loss:0.1000 val_bpb:0.0500 eval_time:1ms",
        "seed:999",
        "Total submission size int8+zlib: 99999999 bytes",
        "=" * 100,
    ])
    s = parse_log(source + "\n" + early_log(seed=5))
    assert s.echo_lines_skipped == 8
    assert s.seed == 5 and s.seeds_printed == [5]
    assert s.final.val_bpb == pytest.approx(1.22436570)
    assert s.total_bytes == 15863489


def test_fstring_lines_outside_an_echo_block_do_not_match():
    s = parse_log('    log0(f"final_int8_zlib_roundtrip val_loss:{a:.4f} val_bpb:{b:.4f}")\n'
                  "final_int8_zlib_roundtrip val_loss:{q:.4f} val_bpb:{r:.4f}\n")
    assert s.final is None and s.scores == []


def test_ternary_style_config_line_and_budget():
    text = "\n".join([
        "activation_type=relu2 adam_eps=1e-08 embed_dim=254 iterations=10000 matrix_lr=0.04 seed=1337 "
        "tokenizer_path=./data/tokenizers/fineweb_8192_bpe.model train_seq_len=1024 vocab_size=8192 warmup_steps=5",
        "step:1000/10000 loss:3.3139 t:91682ms avg:91.7ms",
        "step:6520/10000 val_loss:3.0541 val_bpb:1.1825 train_time:599128ms zero_frac:0.335",
        "stopping_early: wallclock_cap train_time:599128ms step:6520/10000",
        "artifact:15.92MB ternary:64880640(14245920B) fp:2513744(2537376B) code:70853",
        "budget:15995705/16000000 (16.00/16.00MB) FITS",
        "final_ternary_roundtrip val_loss:3.0577 val_bpb:1.1839",
        "final_sliding val_loss:2.9877 val_bpb:1.1568 (stride=16, T=0.90) eval_time:428712ms",
    ])
    s = parse_log(text, name="ternary_log_1337.txt")
    assert s.seed == 1337 and s.seed_source == "config" and s.filename_seed == 1337
    assert s.code_bytes == 70853 and s.total_bytes == 15995705
    assert s.final.family == "final_sliding" and s.tokenizer == "sp8192"


def test_approximate_megabyte_totals_carry_a_tolerance():
    s = parse_log("  INT4+fp8+brotli: 15.67MB model + 0.077MB code = 15.75/16.00MB FITS\n"
                  "final_sliding val_loss:3.1157 val_bpb:1.2064 (stride=16, T=1.02) time:130598ms\n")
    assert s.total_bytes == 15_750_000 and s.total_tolerance == 5000
    assert s.code_bytes == 77_000 and s.code_bytes_approx
    assert s.final.eval_time_ms == 130598


def test_unlabelled_total_after_a_labelled_model_counts():
    text = ("Serialized model: 111568154 bytes\nCode size: 80288 bytes\nTotal submission size: 111648442 bytes\n"
            "Serialized model rdquant+zstd: 16558180 bytes\nTotal submission size: 16638468 bytes\n")
    s = parse_log(text)
    assert s.total_bytes == 16638468 and s.raw_total_bytes == 111648442


def test_post_stop_calibration_sources():
    train = parse_log("stopping_early: wallclock_cap train_time:586090ms step:6709/20000\n"
                      "gptq:calibrating with 64 batches (training data)...\ngptq:calibrated 66 layers in 6.8s\n")
    assert train.post_stop_calibration_s == pytest.approx(6.8) and train.post_stop_calibration_source == "training"
    selfgen = parse_log("stopping_early: wallclock_cap train_time:600085ms step:6242/20000\n"
                        "gptq:generating autoregressive calibration data (64 seqs x 2048 tokens, temp=0.8)...\n"
                        "gptq:collected hessians for 70 layers (AR self-gen)\ngptq:done in 241.8s\n"
                        "wallclock:post_gptq total_elapsed:858.2s train_budget:600.0s\n")
    assert selfgen.post_stop_calibration_source == "self-generated" and selfgen.post_stop_elapsed_s == 858.2


def test_golf_log_is_authoritative():
    code = b"print('hello')\n"
    s = parse_log(golf_log(seed=99, val_loss=2.0727123456789, val_bpb=1.2276123456789, code=code), name="train_seed99.log")
    assert s.seed == 99 and s.golf_result is not None and s.golf_result_line == s.lines
    assert s.final.val_bpb == pytest.approx(1.2276123456789, abs=1e-12)  # full precision from the JSON line
    assert s.code_sha256 is not None and s.code_bytes == len(code)
    assert s.total_bytes == 15863489 and s.val_tokens == 62021632
    assert s.device == "8xNVIDIA H100 80GB HBM3" and s.train_time_source == "golf"
    assert s.hparams["seed"] == "99" and s.problems == []


def test_golf_log_json_disagreeing_with_lines_is_a_problem():
    text = golf_log(seed=3).replace('"seed": 3', '"seed": 4')
    s = parse_log(text)
    assert any("differs from the printed seed" in p for p in s.problems)
    bad = parse_log("golf_result_json:{not json\n")
    assert any("not valid JSON" in p for p in bad.problems)


@pytest.mark.parametrize("text", [
    "", "\x00\x01\x02binary\xff", "final_int8_zlib_roundtrip val_loss:nan val_bpb:nan\n",
    "final_int8_zlib_roundtrip val_loss:inf val_bpb:1e999\n", "seed:" + "9" * 10000 + "\n",
    "Total submission size int8+zlib: " + "9" * 5000 + " bytes\n", "step:" + "1/" * 5000,
    "=" * 100 + "\nimport os\n" + "x\n" * 10, "golf_result_json:" + "[" * 100000,
    "\ufffd" * 1000, "stopping_early: wallclock_cap train_time:abcms\n",
])
def test_hostile_text_never_raises(text):
    s = parse_log(text, name="weird.log")
    assert isinstance(s.problems, list)
    json.dumps(s.to_dict(), default=str)


def test_nonfinite_scores_are_problems_not_finals():
    s = parse_log("final_int8_zlib_roundtrip val_loss:nan val_bpb:nan eval_time:1ms\n")
    assert s.final is None
    assert any("non-finite" in p for p in s.problems)
    s2 = parse_log("final_int8_zlib_roundtrip val_loss:2.0 val_bpb:inf\n")
    assert s2.final is None


def test_several_seeds_are_reported():
    s = parse_log("seed:1\nseed:2\n")
    assert s.seed == 1 and s.seeds_printed == [1, 2] and s.problems


@pytest.mark.parametrize("name,seed", [
    ("train_seed42.log", 42), ("train_seed_2026.txt", 2026), ("log_10mins_seed-7.txt", 7),
    ("hybrid_gdn_1xh100_600s_seq32768_s42.txt", 42), ("4096_hybrid448_s1337.txt", 1337),
    ("ternary_log_1337.txt", 1337), ("ttt_pr1767/seed_0.log", 0), ("train_seed42_pr1851_original.log", 42),
    ("train.log", None), ("train_v0.txt", None), ("logs/train0.txt", None), ("baseline_1xh100_600s_seq8192.txt", None),
])
def test_seed_from_name(name, seed):
    assert seed_from_name(name) == seed


@pytest.mark.parametrize("kwargs,key", [
    (dict(tokenizer_path="./data/tokenizers/fineweb_1024_bpe.model"), "sp1024"),
    (dict(dataset="./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"), "sp8192_caseops"),
    (dict(dataset="./data/datasets/fineweb10B_byte260/fineweb_val_*.bin"), "byte260"),
    (dict(dataset="/workspace/data/datasets/fineweb10B_bytes"), "byte256"),
    (dict(tokenizer_path="fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"), "sp8192_caseops"),
    (dict(), None),
])
def test_tokenizer_key(kwargs, key):
    assert tokenizer_key(**kwargs) == key


def test_parse_log_is_fast_on_a_large_log():
    import time

    body = "\n".join(f"tttg: c{i}/1000 lr:0.001 t:{i}.0s" for i in range(100_000))
    start = time.perf_counter()
    s = parse_log(body + "\n" + early_log())
    assert s.final is not None
    assert time.perf_counter() - start < 2.0
    assert not math.isnan(s.final.val_bpb)


# One sample line per line family of verifier.logs.FAMILIES and what it must set: adding a family is one
# entry in the table and one entry here.
FAMILY_SAMPLES = {
    "eval-limited": ("  eval: 500 batches (limited)", lambda s: s.partial_eval_lines == [1]),
    "hparams-block-item": ("  seed: 7", lambda s: s.seed == 7),
    "step": ("step:10/20 train_loss:2.0 train_time:500ms step_avg:50.00ms", lambda s: s.steps == 10),
    "step-later": ("10/20 train_loss: 2.0 train_time: 0.5m tok/s: 1", lambda s: s.train_time_ms == 30000.0),
    "ttt-progress": ("tttg: c1/10 lr:0.1 t:1.0s", lambda s: not s.problems),
    "score": ("final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.2 eval_time:10ms", lambda s: s.final.val_bpb == 1.2),
    "golf-result": ('golf_result_json:{"seed": 3}', lambda s: s.seed == 3),
    "stop": ("stopping_early: wallclock_cap train_time:600100ms step:9/20", lambda s: s.train_time_ms == 600100),
    "total-size": ("Total submission size int6+zstd: 1234 bytes", lambda s: s.total_bytes == 1234),
    "serialized": ("Serialized model int6+zstd: 1000 bytes", lambda s: s.model_bytes == 1000),
    "code-size": ("Code size: 234 bytes", lambda s: s.code_bytes == 234),
    "golf-code": ("code_sha256:" + "a" * 64 + " code_bytes:99", lambda s: s.code_bytes == 99),
    "artifact-code": ("artifact: model:10 code:77 total:87", lambda s: s.code_bytes == 77),
    "budget": ("budget:15900000/16000000", lambda s: s.total_bytes == 15900000),
    "total-pipe": ("int8 model: 10 bytes | Total submission: 20 bytes", lambda s: s.total_bytes == 20),
    "raw-model-code": ("Raw model: 10 bytes | Code: 5 bytes", lambda s: s.code_bytes == 5),
    "script-size": ("[x] Script size: 42 bytes", lambda s: s.code_bytes == 42),
    "mb-code": ("  int6: 15.80MB model + 0.06MB code = 15.86/16.00MB", lambda s: s.total_bytes == 15860000),
    "gptq": ("gptq:reserving 12s, effective=588000ms", lambda s: s.gptq_reserve_ms == 12000.0),
    "post-gptq": ("wallclock:post_gptq total_elapsed:610.5s train_budget:600.0s", lambda s: s.post_stop_elapsed_s == 610.5),
    "total-eval": ("total_eval_time:332.1s", lambda s: s.total_eval_time_s == 332.1),
    "ttt-note": ("ttt_lora:compile warmup done (85.8s)", lambda s: s.compile_warmup_s == 85.8),
    "eval-only": ("TTT_EVAL_ONLY=1, skipping training", lambda s: s.eval_only),
    "seed": ("seed:1337", lambda s: s.seed == 1337),
    "hparam": ("hparam vocab_size=1024", lambda s: s.vocab_size == 1024),
    "hparams-block": ("Hyperparameters:", lambda s: not s.problems),
    "val-loader": ("val_loader:shards pattern=./data/x/fineweb_val_*.bin tokens:62021632", lambda s: s.val_tokens == 62021632),
    "val-tokens": ("val_tokens: 40540160", lambda s: s.val_tokens == 40540160),
    "train-shards": ("train_shards: 80", lambda s: s.train_shards == 80),
    "world-size": ("world_size:8 grad_accum_steps:1", lambda s: s.world_size == 8),
    "gpu-row": ("|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |", lambda s: s.gpus == ["NVIDIA H100 80GB HBM3"]),
    "torch-version": ("Running Python 3.12.1 PyTorch 2.9.1 device:8xNVIDIA H100", lambda s: s.device == "8xNVIDIA H100"),
    "key-value-config": ("seed=5 a=1 b=2 c=3 d=4 e=5 f=6 g=7", lambda s: s.seed == 5),
    "mentions": ("loading tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model", lambda s: s.tokenizer == "sp1024"),
}


def test_every_line_family_has_a_sample():
    from verifier.logs import FAMILIES

    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names)) and set(names) == set(FAMILY_SAMPLES)


@pytest.mark.parametrize("family", sorted(FAMILY_SAMPLES))
def test_line_family(family):
    line, expect = FAMILY_SAMPLES[family]
    assert expect(parse_log(line + "\n")), family


def test_a_log_that_starts_with_its_source_is_skipped_up_to_the_rule():
    source = ['"""A training script."""', "import os", "def main(device: torch.device):",
              '    log0(f"final_int8_zlib_roundtrip val_loss:{x:.4f} val_bpb:{y:.4f}")', "seed:99"]
    text = "\n".join(source + ["=" * 100, "seed:1337",
                               "final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.2 eval_time:10ms"]) + "\n"
    s = parse_log(text)
    assert s.echo_lines_skipped == len(source) + 1 and s.seed == 1337 and s.device is None and s.seeds_printed == [1337]
