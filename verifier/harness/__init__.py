"""golf-verify's CPU harness: run any record's script unmodified under torchrun on CPU at tiny scale,
with score capture from outside (see docs/DESIGN.md, "CPU harness").

- `inject/`: what the subprocess gets on PYTHONPATH (sitecustomize, the CPU shims and score capture,
  FlashAttention and Triton stand-ins, an nvidia-smi stand-in on PATH);
- `script.py`: the entry script, its knobs, the record's run configuration, the shrink profiles
  (`profiles.json`, data);
- `data.py`: shards, tokenizer and byte sidecars in the script's own format;
- `proc.py`: offline subprocesses with a hard time limit;
- `run.py`: one run of a record (`run_record`), used by --probe, --smoke and --rerun --smoke;
- `capture.py`: reading the capture and mapping captured rows to validation positions.
"""
