"""Load and validate a recipe file; every mistake is one line naming file, line and key."""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from packager.errors import UserError, UserErrors
from packager.hparams import resolve
from packager.recipe.schema import build_schema


@dataclass
class Recipe:
    path: Path
    text: str
    data: dict  # the recipe as written
    values: dict[str, Any]  # every hyperparameter, recipe value or default
    lines: dict[tuple, int] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def identity(self) -> dict:
        return self.data["identity"]

    @property
    def slug(self) -> str:
        return self.identity.get("slug") or re.sub(r"[^A-Za-z0-9_.-]+", "_", self.identity["name"]).strip("_")

    @property
    def track(self) -> str:
        return self.identity["track"]

    @property
    def seeds(self) -> list[int]:
        return list(self.data["seeds"])

    def line_of(self, path: tuple) -> int | None:
        """Line of the deepest key of `path` that the file has."""
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in self.lines:
                return self.lines[tuple(path[:n])]
        return None


def _construct(node: yaml.Node, path: tuple, lines: dict, file: str) -> Any:
    """Python value of a YAML node, recording the line of every mapping key."""
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(key_node, yaml.ScalarNode) else key_node.value
            if not isinstance(key, str):
                raise UserError(f"keys must be strings, got {key!r}", file, key_node.start_mark.line + 1)
            if key in out:
                raise UserError("duplicate key", file, key_node.start_mark.line + 1, ".".join(path + (key,)))
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            items.append(_construct(item, path + (i,), lines, file))
        return items
    # Scalars: let PyYAML's safe resolver type them (ints, floats, bools, null, strings).
    return yaml.safe_load(yaml.serialize(node))


def parse_yaml(text: str, file: str) -> tuple[dict, dict]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", file, mark.line + 1 if mark else None) from None
    if node is None:
        raise UserError("empty recipe; expected a mapping with identity, model, train, ... sections", file)
    if not isinstance(node, yaml.MappingNode):
        raise UserError("a recipe must be a YAML mapping of sections", file, node.start_mark.line + 1)
    lines: dict = {}
    return _construct(node, (), lines, file), lines


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "nothing (null)"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})" if not isinstance(value, (list, dict)) \
        else names[type(value)]


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "a boolean (true/false)", "object": "a mapping", "array": "a list"}


def _schema_errors(err: jsonschema.ValidationError, lines: dict, file: str) -> list[UserError]:
    """One UserError per mistake a schema error stands for (each unknown key of a mapping on its own)."""
    path = tuple(err.absolute_path)
    where = lines.get(path) or _nearest_line(path, lines)
    dotted = ".".join(str(p) for p in path) or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        out = []
        for key in sorted(set(err.instance) - set(allowed)):
            guess = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {guess[0]!r}?" if guess else f"expected one of: {', '.join(allowed)}"
            full = ".".join(str(p) for p in path + (key,))
            out.append(UserError(f"unknown key; {hint}", file, lines.get(path + (key,)) or where, full))
        return out
    if err.validator == "type":
        kinds = [err.validator_value] if isinstance(err.validator_value, str) else err.validator_value
        expected = " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)
        return [UserError(f"expected {expected}, got {_describe(err.instance)}", file, where, dotted)]
    if err.validator == "enum":
        opts = ", ".join(repr(o) for o in err.validator_value)
        return [UserError(f"expected one of {opts}, got {err.instance!r}", file, where, dotted)]
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [UserError(f"missing required key {missing!r}", file, where, dotted)]
    return [UserError(err.message, file, where, dotted)]


def _nearest_line(path: tuple, lines: dict) -> int | None:
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in lines:
            return lines[tuple(path[:n])]
    return None


def cross_field_rules(recipe: Recipe) -> list[tuple[str, str]]:
    """[(key path, message)] for rules between fields that a schema cannot express."""
    v = recipe.values
    out: list[tuple[str, str]] = []
    if v["model_dim"] % v["num_heads"]:
        out.append(("model.model_dim", f"model_dim {v['model_dim']} must be divisible by num_heads {v['num_heads']}"))
    elif (v["model_dim"] // v["num_heads"]) % 2:
        out.append(("model.num_heads", f"head_dim {v['model_dim'] // v['num_heads']} must be even for rotary embeddings"))
    if v["num_heads"] % v["num_kv_heads"]:
        out.append(("model.num_kv_heads", f"num_heads {v['num_heads']} must be divisible by num_kv_heads {v['num_kv_heads']}"))
    span = 8 * v["train_seq_len"]
    if v["train_batch_tokens"] % span:
        out.append(("train.train_batch_tokens",
                    f"train_batch_tokens {v['train_batch_tokens']} must be a multiple of 8 x train_seq_len = {span} "
                    "(8 = world_size x grad_accum_steps)"))
    if v["val_batch_size"] < span:
        out.append(("train.val_batch_size", f"val_batch_size {v['val_batch_size']} must be at least 8 x train_seq_len = {span}"))
    if v["logit_softcap"] <= 0:
        out.append(("model.logit_softcap", "logit_softcap must be positive"))
    match = re.search(r"sp(\d+)", Path(v["data_path"]).name)
    if match and int(match.group(1)) != v["vocab_size"]:
        out.append(("data.vocab_size", f"vocab_size {v['vocab_size']} does not match the dataset "
                                       f"{Path(v['data_path']).name} (sp{match.group(1)})"))
    match = re.search(r"_(\d+)_bpe", Path(v["tokenizer_path"]).name)
    if match and int(match.group(1)) != v["vocab_size"]:
        out.append(("data.vocab_size", f"vocab_size {v['vocab_size']} does not match the tokenizer "
                                       f"{Path(v['tokenizer_path']).name}"))
    head_dim = v["model_dim"] // max(v["num_heads"], 1)
    if v.get("rope_dims", 0) and (v["rope_dims"] % 2 or v["rope_dims"] > head_dim):
        out.append(("model.rope_dims", f"rope_dims {v['rope_dims']} must be even and at most head_dim {head_dim}"))
    if v.get("ve_layers"):
        parts = [p.strip() for p in v["ve_layers"].split(",")]
        if not all(re.fullmatch(r"\d+", p) for p in parts) or len(set(parts)) != len(parts) \
                or any(int(p) >= v["num_layers"] for p in parts):
            out.append(("model.ve_layers", f"ve_layers must be distinct layer indices in 0..{v['num_layers'] - 1} "
                                           f"separated by commas, got {v['ve_layers']!r}"))
    if v.get("bigram_buckets", 0) == 1:
        out.append(("model.bigram_buckets", "bigram_buckets must be 0 (off) or at least 2 (one bucket is reserved "
                                            "for the first position)"))
    stride, eval_len = v.get("sliding_stride", 0), v.get("eval_seq_len", 0) or v["train_seq_len"]
    if stride > eval_len:
        out.append(("eval.sliding_stride", f"sliding_stride {stride} must be at most the eval sequence length {eval_len}"))
    if v.get("ttt_mode") == "lora" and v.get("ttt_chunk_len", 0) > eval_len:
        out.append(("ttt.chunk_len", f"chunk_len {v['ttt_chunk_len']} must be at most the eval sequence length "
                                     f"{eval_len}: a longer chunk would leave tokens unscored"))
    if v.get("ttt_mode") in ("pre_eval", "two_phase_pre_eval"):
        allowed = recipe.data.get("ttt", {}).get("allow_illegal_ttt", False)
        if recipe.track != "non_record_16mb" or not allowed:
            out.append(("ttt.mode", f"{v['ttt_mode']} TTT trains on validation tokens before scoring them, which the "
                                    "rules forbid; it renders only with identity.track non_record_16mb and "
                                    "ttt.allow_illegal_ttt: true"))
    if v.get("compressor") == "pergroup" and not v.get("gptq"):
        out.append(("export.compressor", "compressor pergroup packs the levels of a GPTQ export: set export.gptq: true"))
    out += frontier_rules(v)
    built = ["roundtrip"] + ["sliding"] * (stride > 0) + ["ttt"] * (v.get("ttt_mode", "none") != "none")
    passes = [p.strip() for p in v.get("eval_passes", "").split(",") if p.strip()]
    if [p for p in built if p in passes] != passes:
        out.append(("eval.passes", f"eval.passes {v['eval_passes']!r} must name each of {', '.join(built)} at most "
                                   "once, in this order (sliding needs eval.sliding_stride, ttt a ttt.mode)"))
    if len(set(recipe.seeds)) != len(recipe.seeds):
        out.append(("seeds", "seeds must be distinct"))
    return out + track_limits(recipe)


def track_limits(recipe: Recipe) -> list[tuple[str, str]]:
    """[(key path, message)] where the recipe cannot run within its track's limits."""
    from verifier.checks.timing import LIMIT_S

    cap = recipe.values["max_wallclock_seconds"]
    if recipe.track == "10min_16mb" and not 0 < cap <= LIMIT_S:
        return [("train.max_wallclock_seconds",
                 f"max_wallclock_seconds must be > 0 and at most {LIMIT_S:g} on the 10min_16mb track, got {cap:g}: "
                 f"records train for at most {LIMIT_S:g} s on 8xH100 (README), and 0 or less would turn the cap off")]
    if cap < 0:
        return [("train.max_wallclock_seconds", f"max_wallclock_seconds must be 0 (no cap) or positive, got {cap:g}")]
    return []


def frontier_rules(v: dict) -> list[tuple[str, str]]:
    """Cross-field rules of the April records' techniques (packager/runtime/frontier.py, docattn.py, kernels.py)."""
    out = []
    layers = v["num_layers"]
    if v.get("num_loops", 0) > 0 and not 0 <= v["loop_start"] <= v["loop_end"] < layers:
        out.append(("model.loop_end", f"the looped span loop_start..loop_end ({v['loop_start']}..{v['loop_end']}) "
                                      f"must lie inside the {layers} layers"))
    if v.get("parallel_start_layer", 0) >= layers:
        out.append(("model.parallel_start_layer", f"parallel_start_layer {v['parallel_start_layer']} must be below "
                                                  f"num_layers {layers}"))
    gates = [k for k in ("attn_out_gate", "gated_attn", "sparse_attn_gate") if v.get(k)]
    if len(gates) > 1:
        out.append((f"model.{gates[1]}", f"attention output gates are mutually exclusive; the recipe enables {gates}"))
    if v.get("fused_mlp") and v["activation"] != "leaky_relu2":
        out.append(("model.fused_mlp", "the fused MLP kernel computes LeakyReLU(0.5)^2: set model.activation "
                                       "leaky_relu2"))
    if v.get("doc_attention") and not v.get("rope_train_seq_len"):
        out.append(("model.doc_attention", "per-document attention packs a rank's span into one long row: set "
                                           "model.rope_train_seq_len (fp32 RoPE positions keep their precision)"))
    if v.get("muon_ns") == "polar_express" and v["muon_backend_steps"] > 5:
        out.append(("train.optimizer.muon_backend_steps", "Polar Express has 5 tuned iterations: "
                                                          "muon_backend_steps must be at most 5"))
    return out


def load_recipe(path: str | Path, *, display: str | None = None) -> Recipe:
    path = Path(path)
    file = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such recipe file", file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read recipe: {exc.__class__.__name__}", file) from None
    data, lines = parse_yaml(text, file)
    validator = jsonschema.Draft202012Validator(build_schema())
    errors = [e for err in validator.iter_errors(data) for e in _schema_errors(err, lines, file)]
    if not errors:  # the rules between fields need every value of the right type
        recipe = Recipe(path=path, text=text, data=data, values=resolve(data), lines=lines)
        errors = [UserError(message, file, recipe.line_of(tuple(key.split("."))), key)
                  for key, message in cross_field_rules(recipe)]
    if errors:
        errors.sort(key=lambda e: (e.line or 0, e.key or ""))
        raise errors[0] if len(errors) == 1 else UserErrors(errors)
    return recipe
