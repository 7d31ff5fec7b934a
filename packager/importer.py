"""`golf-pack import RECORD` and `golf-pack diff A B`: a record folder as a recipe, and what differs.

Import reads, without running anything, the record's script (a self-extracting lzma/brotli/zlib +
base85/base64 one-liner is decoded statically), the defaults of its `Hyperparameters` class (each
`os.environ.get("ENV", default)` with its cast) and the hyperparameters its logs print (a
`Hyperparameters:` block of `  name: value` lines, or our `hparam name=value` lines), which win
over the script's defaults: they are what ran. Each setting maps to a recipe key by its name or
environment variable (plus a few known renames); settings about the run's environment (paths of
logs, ranks) are dropped by design, and every other setting that does not map is listed by name in
the report and as a comment at the top of the recipe. `model_params` of the recipe's model is
compared with the `model_params:` the logs print.
"""

from __future__ import annotations

import ast
import base64
import json
import lzma
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from packager.errors import UserError
from packager.hparams import all_hparams

# Record attribute -> our hyperparameter name, where neither the name nor the env var matches.
RENAMES = {"ttt_chunk_size": "ttt_chunk_len", "ttt_batch_size": "ttt_batch_docs", "use_smeargate": "smear_gate", "bigram_vocab_size": "bigram_buckets", "bigram_hash_buckets": "bigram_buckets",
           "bigram_hash_dim": "bigram_dim", "eval_stride": "sliding_stride", "val_batch_tokens": "val_batch_size",
           "gptq_calib_batches": "gptq_calibration_batches", "gate_attn_out": "attn_out_gate",
           "gate_attn_src": "attn_out_gate_src", "gate_width": "gate_window"}
# Settings that say GPTQ ran (the full-Hessian export of the later records).
GPTQ_HINTS = {"use_gptq", "gptq_calibration_batches", "gptq_calib_batches", "gptq_calib_samples", "matrix_clip_sigmas",
              "embed_clip_sigmas"}
# Settings of the run's environment, not of the recipe (paths, ranks, derived values).
ENVIRONMENT = {"data_dir", "run_id", "rank", "world_size", "local_rank", "distributed", "is_main_process",
               "grad_accum_steps", "logfile", "model_path", "quantized_model_path", "artifact_dir", "train_files",
               "val_files", "val_bytes_files", "ttt_enabled", "datasets_dir", "data_path", "tokenizer_path",
               "default_datasets_dir"}
# Techniques some scripts hard-code (no setting): (pattern in the source, setting it implies, unless set).
CODE_MARKERS = ((r"^class SmearGate\b", "use_smeargate", True),)
WRAPPED_MIN = 2000  # a string constant this long in a short script is a packed program


@dataclass
class Imported:
    folder: Path
    source: str
    values: dict  # our hp name -> value (differs from our default or not)
    unmapped: dict  # record setting -> (value, reason)
    model_params: int | None  # from the logs
    meta: dict = field(default_factory=dict)  # submission.json


def unwrap(source: str, depth: int = 0) -> str:
    """The program inside a self-extracting script (decoded statically), or the source itself."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    if depth > 3 or source.count("\n") > 50:
        return source
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > WRAPPED_MIN:
            raw = node.value.encode() if isinstance(node.value, str) else node.value
            for decode in (base64.b85decode, base64.b64decode):
                for inflate in (lzma.decompress, zlib.decompress, _brotli, lambda b: b):
                    try:
                        text = inflate(decode(raw)).decode("utf-8")
                    except Exception:  # noqa: BLE001 - any failure means: not this encoding
                        continue
                    if "def " in text or "import" in text:
                        return unwrap(text, depth + 1)
    return source


def _brotli(data: bytes) -> bytes:
    import brotli  # only for brotli-packed scripts

    return brotli.decompress(data)


def _env_default(node: ast.AST) -> tuple[str, object, str] | None:
    """(ENV, default, cast) of `cast(os.environ.get("ENV", default))` anywhere in an expression."""
    casts = []
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        casts.append(node.func.id)
        node = node.args[0]
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv")
            and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    try:
        default = ast.literal_eval(node.args[1]) if len(node.args) > 1 else None
    except ValueError:
        default = None
    cast = "bool" if "bool" in casts else casts[-1] if casts else "str"
    return str(node.args[0].value), default, cast


def script_settings(source: str) -> dict[str, tuple[str, object]]:
    """{attribute: (ENV, default)} of the Hyperparameters class, defaults cast as the script casts them."""
    out = {}
    for cls in ast.walk(ast.parse(source)):
        if not (isinstance(cls, ast.ClassDef) and cls.name == "Hyperparameters"):
            continue
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                found = _env_default(stmt.value)
                if found:
                    env, default, cast = found
                    out[stmt.targets[0].id] = (env, _cast(default, cast))
    return out


def _cast(value, cast: str):
    try:
        if cast == "bool":
            return bool(int(value)) if isinstance(value, str) else bool(value)
        return {"int": int, "float": float}.get(cast, lambda v: v)(value)
    except (TypeError, ValueError):
        return value


def log_settings(folder: Path) -> tuple[dict, int | None]:
    """({name: value} the first log prints, model_params) from the folder's logs."""
    values, params = {}, None
    for log in sorted(folder.glob("**/*.log")) + sorted(p for p in folder.glob("**/*.txt") if p.name != "requirements.txt"):
        text = re.sub(r"^\d{9,}\.\d+ ", "", log.read_text(encoding="utf-8", errors="replace"), flags=re.M)  # timestamps
        found = re.search(r"^model_params:(\d+)", text, re.M)
        params = params or (int(found.group(1)) if found else None)
        block = re.search(r"^Hyperparameters:\n((?:  \w+: .*\n)+)", text, re.M)
        lines = re.findall(r"^  (\w+): (.*)$", block.group(1), re.M) if block else \
            re.findall(r"^hparam (\w+)=(.*)$", text, re.M)
        if lines and not values:
            values = {k: _parse(v) for k, v in lines}
    return values, params


def _parse(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _hp_index() -> dict[str, object]:
    index = {}
    for hp in all_hparams():
        index.setdefault(hp.name, hp)
        index.setdefault(hp.env.lower(), hp)
    return index


def derived_settings(settings: dict) -> dict:
    """Settings a record states another way: an MLP width, an on/off flag for a list, GPTQ hints."""
    out = dict(settings)
    hidden, dim = out.get("mlp_hidden"), out.get("model_dim", 512)
    if isinstance(hidden, int) and hidden > 0 and hidden % dim == 0:
        out["mlp_mult"] = hidden // dim
        del out["mlp_hidden"]
    elif not hidden:  # 0: the width comes from mlp_mult
        out.pop("mlp_hidden", None)
    if "num_loops" in out and "loop_start" not in out:  # the early NUM_LOOPS: the whole stack N times
        loops = out.pop("num_loops")
        if loops not in (0, 1):
            out["num_loops_whole_stack"] = loops
    if out.get("ve_enabled") is False:
        out["ve_layers"] = ""
    out.pop("ve_enabled", None)
    if any(out.get(k) not in (None, False, 0) for k in GPTQ_HINTS) or out.get("compressor") == "pergroup":
        out.setdefault("gptq", True)
    out.pop("use_gptq", None)
    return out


def data_paths(values: dict) -> dict:
    """The challenge's layout for the vocabulary (a record's own paths are of its machine)."""
    v = values.get("vocab_size", 1024)
    if values.get("caseops_enabled"):
        return {"data_path": f"./data/datasets/fineweb10B_sp{v}_caseops",
                "tokenizer_path": f"./data/tokenizers/fineweb_{v}_bpe_caseops.model"}
    return {"data_path": f"./data/datasets/fineweb10B_sp{v}", "tokenizer_path": f"./data/tokenizers/fineweb_{v}_bpe.model"}


def map_settings(settings: dict) -> tuple[dict, dict]:
    """(our values, unmapped {name: (value, reason)})."""
    index, values, unmapped = _hp_index(), {}, {}
    for name, value in sorted(derived_settings(settings).items()):
        if name in ENVIRONMENT or name.startswith("_"):
            continue
        hp = index.get(RENAMES.get(name, name))
        if hp is None:
            unmapped[name] = (value, "no recipe key")
            continue
        try:
            converted = _convert(hp, value)
        except ValueError as exc:
            unmapped[name] = (value, str(exc))
            continue
        values[hp.name] = converted
    return values | data_paths(values), unmapped


def _convert(hp, value):
    if hp.kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{hp.path} takes an integer")
        value = int(value)
    if hp.kind is bool and isinstance(value, int):
        value = bool(value)
    if hp.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hp.kind is str and value is None:
        raise ValueError("no value")
    if not isinstance(value, hp.kind) or (hp.kind is int and isinstance(value, bool)):
        raise ValueError(f"{hp.path} takes {hp.kind.__name__}, the record has {type(value).__name__}")
    if hp.choices and value not in hp.choices:
        raise ValueError(f"{hp.path} takes one of {', '.join(map(str, hp.choices))}")
    return value


def find_script(folder: Path) -> Path:
    script = folder / "train_gpt.py"
    if script.is_file():
        return script
    candidates = [p for p in sorted(folder.glob("*.py")) if "Hyperparameters" in unwrap(p.read_text(errors="replace"))]
    if not candidates:
        raise UserError("no train_gpt.py (nor another script with a Hyperparameters class)", str(folder))
    return candidates[0]


def readme_env(folder: Path) -> dict[str, str]:
    """ENV=value assignments of the torchrun command lines in the README (continuations joined)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace").replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if "torchrun" in line or "train_gpt" in line:
            out.update(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]+)=([^\s\\]+)", line))
    return out


def import_record(folder: Path) -> Imported:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("not a record folder", str(folder))
    source = unwrap(find_script(folder).read_text(encoding="utf-8", errors="replace"))
    declared = script_settings(source)
    settings = {name: default for name, (_, default) in declared.items()}
    command = readme_env(folder)  # the run's overrides, where the README gives its command
    for name, (env, default) in declared.items():
        if env in command:
            settings[name] = _cast(command[env], type(default).__name__ if default is not None else "str") \
                if not isinstance(default, bool) else bool(int(command[env]))
    logged, params = log_settings(folder)
    settings.update(logged)
    for pattern, name, value in CODE_MARKERS:
        if re.search(pattern, source, re.M) and not any(k.startswith(("smear", "use_smear")) for k in settings):
            settings[name] = value
    values, unmapped = map_settings(settings)
    meta = {}
    if (folder / "submission.json").is_file():
        try:
            meta = json.loads((folder / "submission.json").read_text())
        except ValueError:
            meta = {}
    if settings.get("ttt_enabled") and "ttt_mode" not in values:
        values["ttt_mode"] = "phased" if "phased_ttt_prefix_docs" in settings else \
            "lora" if "ttt_lora_rank" in settings else "chunked"
    return Imported(folder, source, values, unmapped, params, meta)


def recipe_dict(imp: Imported) -> dict:
    """The recipe: identity from submission.json, every mapped value that differs from our default."""
    defaults = {hp.name: hp.default for hp in all_hparams()}
    meta, tree = imp.meta, {}
    name = str(meta.get("name") or imp.folder.name)
    date = re.match(r"\d{4}-\d{2}-\d{2}", imp.folder.name)
    identity = {"name": name, "slug": re.sub(r"[^A-Za-z0-9_.-]+", "_", imp.folder.name[11:] or name).strip("_"),
                "author": str(meta.get("author") or "unknown"),
                "github_id": re.sub(r"[^A-Za-z0-9-]", "-", str(meta.get("github_id") or "unknown")),
                "track": "non_record_16mb" if "non_record" in str(imp.folder.parent.name) else "10min_16mb",
                "based_on": [{"record": f"records/{imp.folder.parent.name}/{imp.folder.name}",
                              "note": "imported by golf-pack import"}]}
    if date:
        identity["date"] = date.group(0)
    tree["identity"] = identity
    index = {hp.name: hp for hp in all_hparams()}
    for name, value in sorted(imp.values.items()):
        hp = index[name]
        if hp.path.startswith("seeds") or value == defaults[name]:
            continue
        node = tree
        for part in hp.path.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[hp.path.split(".")[-1]] = value
    seeds = meta.get("seeds") or [imp.values.get("seed", 1337)]
    tree["seeds"] = [int(s) for s in seeds if str(s).isdigit()] or [1337]
    return tree


def recipe_text(imp: Imported) -> str:
    head = [f"# Imported by golf-pack import from {imp.folder.name}.",
            f"# {len(imp.unmapped)} setting(s) of the record have no recipe key and are NOT in this recipe:"]
    head += [f"#   {name} = {value!r}  ({reason})" for name, (value, reason) in sorted(imp.unmapped.items())]
    return "\n".join(head) + "\n" + yaml.safe_dump(recipe_dict(imp), sort_keys=False, allow_unicode=True)


def rendered_model_params(values: dict) -> int:
    """Parameters of the model a recipe with these values builds (as the script's model_params line)."""
    from types import SimpleNamespace

    import torch

    from packager.runtime.model import GPT

    args = SimpleNamespace(**{hp.name: hp.default for hp in all_hparams()} | values)
    torch.manual_seed(0)
    return sum(p.numel() for p in GPT(args).parameters())


def check_import(folder: Path, out: Path | None = None) -> dict:
    """Import a record, write and load its recipe, compare model_params; a report dict."""
    from packager.recipe import load_recipe

    imp = import_record(folder)
    report = {"record": folder.name, "unmapped": sorted(imp.unmapped), "logged_params": imp.model_params}
    text = recipe_text(imp)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        try:
            recipe = load_recipe(out)
            report["params"] = rendered_model_params(recipe.values)
        except (UserError, ValueError, RuntimeError) as exc:
            report["error"] = str(exc).splitlines()[0]
    report["match"] = report.get("params") is not None and report["params"] == imp.model_params
    if not report["match"] and not imp.unmapped and "error" not in report:
        report["error"] = ("every setting mapped, yet the parameter counts differ: the record ran with settings "
                           "its logs and README do not show, or with code the runtime does not have")
    return report


def diff_sources(a: Path, b: Path) -> list[str]:
    """Lines 'key: A -> B' for every effective setting, technique and code size that differs."""
    sa, sb = _effective(a), _effective(b)
    lines = []
    for key in sorted(set(sa) | set(sb)):
        if sa.get(key) != sb.get(key):
            lines.append(f"{key}: {sa.get(key, '-')} -> {sb.get(key, '-')}")
    return lines


def _effective(path: Path) -> dict:
    """{setting: value} of a recipe file or a record folder (ours: its recipe, else imported), plus
    `techniques` (the features a recipe uses) and `code_bytes`."""
    from packager.recipe import load_recipe
    from packager.render import recipe_features

    path = Path(path)
    if path.is_file():
        values = load_recipe(path).values
        out = dict(values)
    elif (path / "recipe.yaml").is_file():
        values = load_recipe(path / "recipe.yaml").values
        out = dict(values)
    else:
        imp = import_record(path)
        values = {hp.name: hp.default for hp in all_hparams()} | imp.values
        out = dict(values) | {f"unmapped.{k}": v for k, (v, _) in imp.unmapped.items()}
    out["techniques"] = ", ".join(sorted(recipe_features(values)))
    if path.is_dir() and (path / "train_gpt.py").is_file():
        out["code_bytes"] = (path / "train_gpt.py").stat().st_size
    return out
