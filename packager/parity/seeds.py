"""The records the shipped recipes reproduce, and how each one is compared.

One entry per recipe that names a record. Paths are relative to ../shared. `tiny` is the
environment (the variables participants know) that shrinks both programs for the numeric
comparisons; `run` lists the variables the record's run set on its command line or in a code
default it did not read from the environment, so that its Hyperparameters defaults are not what
ran; `aliases` maps our variable to the record's where the names differ. `switches` are recipe
values that bring back the record's behaviour where the recipe deliberately differs from it,
with the reason; the comparison reports the recipe as it ships and with the switches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Tiny models: every technique present, at least one matrix of >= 64x64 in each class (so the
# orthogonal init and its 1/sqrt(2L) projection scaling run), sequences of 128.
TINY = dict(VOCAB_SIZE=256, NUM_LAYERS=4, MODEL_DIM=128, NUM_HEADS=4, NUM_KV_HEADS=2, BIGRAM_VOCAB_SIZE=64,
            BIGRAM_DIM=64, VE_DIM=64, VE_LAYERS="2,3", XSA_LAST_N=2, TRAIN_SEQ_LEN=128, EVAL_SEQ_LEN=128,
            VAL_BATCH_SIZE=8192, EVAL_STRIDE=32, EVAL_BATCH_SEQS=8, TTT_BATCH_SEQS=4, TTT_CHUNK_TOKENS=512)


@dataclass(frozen=True)
class Seed:
    recipe: str  # recipes/<recipe>.yaml
    script: str  # the record's train_gpt.py, relative to ../shared
    label: str
    score: str  # how the record computes its final score (see compare.EVALS)
    export: str  # how the record builds its artifact (see compare.EXPORTS)
    tiny: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)  # ENV: why the run's value is not the script's default
    aliases: dict = field(default_factory=dict)  # our ENV -> the record's ENV
    qat: str = ""  # where the record's fake quantization is live: "train" or "ttt"
    switches: dict = field(default_factory=dict)  # recipe values that restore the record's behaviour
    why: str = ""  # why the recipe keeps its own behaviour where `switches` differ


SEEDS = {
    "naive_baseline": Seed(
        "naive_baseline", "upstream/train_gpt.py", "root train_gpt.py", score="roundtrip", export="int8",
        tiny=dict(MLP_MULT=2)),
    "qat_bigramhash12k_stride32": Seed(
        "qat_bigramhash12k_stride32", "seeds/records/001_qat_bigramhash12k_stride32/train_gpt.py", "seed 001",
        score="sliding", export="wm_prune_params", qat="train",
        run={"SEED": "the run used SEED=2024 (S001.log:14); the script's default is 42"},
        aliases={"ADAM_WD": "WEIGHT_DECAY"},
        switches=dict(eval_windows="records"),
        why="the record's windows score the last tokens of the split again (up to seq_len/stride times); "
            "the recipe scores every token once"),
    "legal_score_first_ttt": Seed(
        "legal_score_first_ttt", "seeds/records/002_legal_score_first_ttt/train_gpt.py", "seed 002",
        score="ttt_chunked", export="wm", qat="ttt", tiny=dict(TTT_EPOCHS=2),
        switches=dict(eval_windows="records"),
        why="the record's windows score the last tokens of the split again; the recipe scores every token once"),
    "illegal_pre_eval_ttt": Seed(
        "illegal_pre_eval_ttt", "seeds/records/002v1_pre_eval_ttt/train_gpt.py", "seed 002 v1",
        score="pre_eval", export="wm", qat="ttt",
        tiny=dict(TTT_EPOCHS=2, TTT_BATCH_SEQS=32, EVAL_BATCH_SEQS=32)),  # the record's 32 are not read from the env
    "two_phase_ttt_as_submitted": Seed(
        "two_phase_ttt_as_submitted", "seeds/records/000_two_phase_ttt/train_gpt.py", "seed 000",
        score="two_phase_pre_eval", export="wm_prune_sd", qat="ttt",
        tiny=dict(TTT_P1_EPOCHS=2, TTT_P2_EPOCHS=2, TTT_BATCH_SEQS=4, EVAL_BATCH_SEQS=32)),
    "two_phase_ttt": Seed(
        "two_phase_ttt", "seeds/records/000_two_phase_ttt/train_gpt.py", "seed 000",
        score="two_phase_pre_eval", export="wm_prune_sd", qat="ttt",
        tiny=dict(TTT_P1_EPOCHS=2, TTT_P2_EPOCHS=2, TTT_BATCH_SEQS=4, EVAL_BATCH_SEQS=32),
        switches=dict(ttt_mode="two_phase_pre_eval", ttt_allow_illegal=True, eval_windows="records_all"),
        why="the legal form: the record trained both phases on the whole validation split before scoring it; "
            "the recipe runs them score-first on each 32,768-token chunk and scores every token once"),
    "lora_ttt_swiglu_1xh100": Seed(
        "lora_ttt_swiglu_1xh100", "seeds/records/003_lora_ttt_swiglu_1xh100/train_gpt.py", "seed 003",
        score="lora_chunks", export="int8_then_mixed", tiny=dict(TTT_CHUNK_SIZE=32, TTT_MIN_DOC_LEN=16, XSA_LAST_N=4),
        run={"WARMDOWN_ITERS": "the run command sets WARMDOWN_ITERS=3000 (S003.README)",
             "MAX_WALLCLOCK_SECONDS": "the run command sets 4850 (S003.README; S003.log:10)"},
        aliases={"TTT_LORA_RANK": "TTT_RANK", "TTT_LORA_LR": "TTT_LR", "TTT_CHUNK_LEN": "TTT_CHUNK_SIZE"},
        switches=dict(ttt_score_all=False),
        why="the record leaves out documents of < 5 tokens, 1-token chunks and every document's prediction of "
            "the next BOS; the recipe scores every target"),
}
