"""Small writers for synthetic record folders and logs in the formats the verifier reads.

The numbers are made up; the line formats follow docs/DESIGN.md (golf-pack logs) and the log
families listed in ../shared/CHALLENGE.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root
ROOT_HINT = ROOT
CORPUS = ROOT / ".." / "shared" / "upstream" / "records"  # the public records, byte for byte, beside the repository
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legality"


def corpus_folders() -> list[Path]:
    """Every record folder of the public corpus: each direct child of a track folder."""
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.glob("track_*/*") if p.is_dir())


def fixture_script(name: str) -> str:
    """A legality fixture (tests/verifier/fixtures/legality/<name>.py) after their shared head."""
    return (FIXTURES / "common.py").read_text(encoding="utf-8") + "\n\n" + (FIXTURES / f"{name}.py").read_text(
        encoding="utf-8")

SP1024_TOKENS = 62021632
SP8192_TOKENS = 40540160
SP1024_RATIO = 0.592257  # bpb per nat


def write_record(root: Path, files: dict, *, name: str = "2026-05-01_Test", track: str = "track_10min_16mb") -> Path:
    folder = root / track / name if track else root / name
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def submission(**fields) -> str:
    base = {"author": "Tester", "github_id": "tester", "name": "Test record", "date": "2026-05-01",
            "blurb": "synthetic"}
    base.update(fields)
    return json.dumps(base, indent=2)


def script(lines: int = 40, header: str = "") -> str:
    body = [header] if header else []
    body += ['"""A synthetic training script."""', "import os", "", "def main():"]
    body += [f"    x{i} = {i}" for i in range(max(0, lines - len(body) - 2))]
    body += ["", "main()"]
    return "\n".join(body[:lines]) + "\n"


def early_log(*, seed: int | None = 1337, val_loss: float = 2.07269931, val_bpb: float = 1.22436570,
              total: int = 15863489, code: int = 47642, train_ms: int = 600038, steps: int = 13780,
              eval_ms: int = 1401, val_tokens: int = SP1024_TOKENS, world: int = 8, gpu: str = "NVIDIA H100 80GB HBM3",
              sliding: tuple[float, float, int] | None = None) -> str:
    """The early upstream format: step:N/M lines, stopping_early train_time:Nms, final_int8_zlib_roundtrip."""
    lines = [
        "logs/run.txt",
        "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
        "train_loader:dataset:fineweb10B_sp1024 train_shards:25",
        f"val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:{val_tokens}",
        "model_params:17059912",
        f"world_size:{world} grad_accum_steps:{8 // world}",
    ]
    if gpu:
        lines += [f"|   {i}  {gpu}          On  |   00000000:18:00.0 Off |                    0 |" for i in range(world)]
    if seed is not None:
        lines.append(f"seed:{seed}")
    lines += [
        "step:0/20000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.01ms",
        f"step:{steps // 2}/20000 train_loss:2.1000 train_time:{train_ms // 2}ms step_avg:43.54ms",
        f"step:{steps}/20000 val_loss:{val_loss - 0.01:.4f} val_bpb:{val_bpb - 0.006:.4f} train_time:{train_ms}ms step_avg:43.54ms",
        f"stopping_early: wallclock_cap train_time:{train_ms}ms step:{steps}/20000",
        "peak memory allocated: 10184 MiB reserved: 10200 MiB",
        "Serialized model: 67224983 bytes",
        f"Code size: {code} bytes",
        f"Total submission size: {67224983 + code} bytes",
        f"Serialized model int8+zlib: {total - code} bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)",
        f"Total submission size int8+zlib: {total} bytes",
        f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{eval_ms}ms",
        f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}",
    ]
    if sliding:
        sl, sb, sms = sliding
        lines += [f"final_sliding_window val_loss:{sl:.4f} val_bpb:{sb:.4f} stride:64 eval_time:{sms}ms",
                  f"final_sliding_window_exact val_loss:{sl:.8f} val_bpb:{sb:.8f}"]
    return "\n".join(lines) + "\n"


def later_log(*, seed: int = 42, val_loss: float = 2.76738841, val_bpb: float = 1.07134229, total: int = 15939841,
              code: int = 122168, code_compressed: int = 27610, train_ms: int = 596103, steps: int = 4967,
              reserve_s: int = 4, hessian_s: float = 3.4, ttt_ms: int = 332086, diag_ms: int = 9559,
              warmup_s: float = 85.8, warmup_note: str = " (random tokens, no val data)",
              val_tokens: int = SP8192_TOKENS, timestamps: float | None = None) -> str:
    """The later upstream format: Hyperparameters block, N/M train_loss lines, quantized_* finals, phased TTT."""
    lines = [
        "Hyperparameters:",
        "  data_dir: ./data/",
        "  datasets_dir: ./data/datasets/fineweb10B_sp8192",
        f"  gptq_reserve_seconds: {float(reserve_s)}",
        "  iterations: 20000",
        f"  seed: {seed}",
        "  tokenizer_path: ./data/tokenizers/fineweb_8192_bpe.model",
        "  val_loss_every: 4000",
        "  vocab_size: 8192",
        "  world_size: 8",
        f"val_tokens: {val_tokens}",
        "model_params:35944602",
        f"gptq:reserving {reserve_s}s, effective={600000 - reserve_s * 1000}ms",
        "warmup_step: 1/20",
        "0/20000 val_loss: 9.0086 val_bpb: 3.4874",
        "1/20000 train_loss: 9.0089 train_time: 0.0m tok/s: 16596497",
        f"{steps}/20000 val_loss: {val_loss + 0.001:.4f} val_bpb: {val_bpb + 0.0005:.4f}",
        f"stopping_early: wallclock_cap train_time: {train_ms}ms step: {steps}/20000",
        "peak memory allocated: 40019 MiB reserved: 44090 MiB",
        "diagnostic pre-quantization post-ema val_loss:2.76680431 val_bpb:1.07108165 eval_time:6282ms",
        "Serialized model: 135409136 bytes",
        f"Code size (uncompressed): {code} bytes",
        f"Code size (compressed): {code_compressed} bytes",
        "GPTQ:collecting Hessians from calibration data...",
        f"GPTQ:collected 67 Hessians in {hessian_s}s",
        f"Serialized model quantized+brotli: {total - code_compressed} bytes",
        f"Total submission size quantized+brotli: {total} bytes",
        f"diagnostic quantized val_loss:2.79997898 val_bpb:1.08392419 eval_time:{diag_ms}ms",
        f"ttt_lora:warming up compile{warmup_note}",
        f"ttt_lora:compile warmup done ({warmup_s}s)",
        "",
        "beginning TTT eval timer",
        "ttt_phased: total_docs:50000 prefix_docs:2000 suffix_docs:48000 num_phases:3 boundaries:[666, 1333, 2000]",
        "ttpp: phase:1/3 pd:1104 gd:666 t:143.3s",
        f"quantized_ttt_phased val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f} eval_time:{ttt_ms}ms",
        f"total_eval_time:{ttt_ms / 1000:.1f}s",
    ]
    if timestamps is not None:
        out, t = [], timestamps
        for line in lines:
            if line.startswith("Total submission size"):
                t += 60.0
            if line.startswith("quantized_ttt_phased"):
                t += ttt_ms / 1000.0 + diag_ms / 1000.0 + warmup_s
            out.append(f"{t:.3f} {line}")
            t += 0.01
        lines = out
    return "\n".join(lines) + "\n"


def golf_log(*, seed: int = 1337, val_loss: float = 2.0727, val_bpb: float = 1.2276, total: int = 15863489,
             code: bytes | None = None, train_ms: int = 598000, steps: int = 13700, val_tokens: int = SP1024_TOKENS,
             device: str = "8xNVIDIA H100 80GB HBM3", world: int = 8, code_sha: str | None = None) -> str:
    """A log as golf-pack's rendered scripts write it (docs/DESIGN.md), with golf_result_json last."""
    code = code if code is not None else script().encode()
    sha = code_sha or hashlib.sha256(code).hexdigest()
    model = total - len(code)
    result = {
        "seed": seed, "val_loss": val_loss, "val_bpb": val_bpb, "eval_path": "final_int8_zlib_roundtrip",
        "roundtrip_val_loss": val_loss, "roundtrip_val_bpb": val_bpb, "bytes_model": model, "bytes_code": len(code),
        "bytes_total": total, "code_sha256": sha, "train_time_ms": train_ms, "eval_time_ms": 1400,
        "total_eval_time_s": 9.5, "steps": steps, "iterations": 20000, "step_avg_ms": 43.6, "stopped_early": True,
        "world_size": world, "grad_accum_steps": 8 // world, "model_params": 17059912, "val_tokens": val_tokens,
        "device": device, "torch": "2.9.1", "python": "3.12.3", "packager_version": "0.1.0", "recipe_sha256": "0" * 64,
    }
    lines = [
        f"code_sha256:{sha} code_bytes:{len(code)}",
        f"recipe_sha256:{'0' * 64} packager:0.1.0",
        f"Running Python 3.12.3 PyTorch 2.9.1 device:{device}",
        "hparam data_path=./data/datasets/fineweb10B_sp1024",
        f"hparam seed={seed}",
        "hparam tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
        "hparam val_loss_every=0",
        "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
        f"val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:{val_tokens}",
        "model_params:17059912",
        f"world_size:{world} grad_accum_steps:{8 // world}",
        f"seed:{seed}",
        f"step:{steps}/20000 train_loss:2.0234 train_time:{train_ms}ms step_avg:43.60ms",
        f"stopping_early: wallclock_cap train_time:{train_ms}ms step:{steps}/20000",
        f"Serialized model int8+zlib: {model} bytes",
        f"Code size: {len(code)} bytes",
        f"Total submission size int8+zlib: {total} bytes",
        f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:1400ms",
        f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}",
        "total_eval_time:9.5s",
        "golf_result_json:" + json.dumps(result, sort_keys=True),
    ]
    return "\n".join(lines) + "\n"


def three_seed_record(*, bpbs=(1.20001234, 1.20101234, 1.20201234), ratio=SP1024_RATIO, json_bpb=None, json_loss=None,
                      code_len=None, extra_files=None, **sub_fields) -> dict:
    """Files of a plausible legacy 3-seed record whose JSON reports the mean by default."""
    code_text = script()
    code_len = len(code_text.encode()) if code_len is None else code_len
    files = {"train_gpt.py": code_text, "README.md": "# test\n"}
    seeds = [1337, 42, 7]
    losses = [b / ratio for b in bpbs]
    totals = [15_800_000 + 1000 * i for i in range(len(bpbs))]
    for seed, bpb, loss, total in zip(seeds, bpbs, losses, totals):
        files[f"train_seed{seed}.log"] = early_log(seed=seed, val_bpb=bpb, val_loss=loss, total=total, code=code_len)
    mean_bpb = sum(bpbs) / len(bpbs)
    mean_loss = sum(losses) / len(losses)
    fields = dict(val_bpb=round(json_bpb if json_bpb is not None else mean_bpb, 8),
                  val_loss=round(json_loss if json_loss is not None else mean_loss, 8),
                  bytes_total=max(totals), bytes_code=code_len, seeds=seeds)
    fields.update(sub_fields)
    files["submission.json"] = submission(**fields)
    files.update(extra_files or {})
    return files
