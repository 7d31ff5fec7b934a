"""The recipe's JSON Schema, built from the runtime modules' HP declarations.

The hyperparameter part of a recipe is owned by the runtime modules (their
`HPARAMS`); the rest (identity, seeds, code) is declared here. The published file
`schema.json` beside this module is generated from this and kept in sync by a test.
"""

from __future__ import annotations

import json
from pathlib import Path

from packager.hparams import all_hparams

SCHEMA_PATH = Path(__file__).with_name("schema.json")
SCHEMA_ID = "https://github.com/openai/parameter-golf/golf-pack/recipe.schema.json"

TRACKS = ("10min_16mb", "non_record_16mb")
SECTIONS = ("identity", "data", "model", "train", "export", "eval", "ttt", "code", "seeds")

IDENTITY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "author", "github_id", "track"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "record name shown on the leaderboard"},
        "slug": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                 "description": "folder name after the date; default: name with spaces as underscores"},
        "author": {"type": "string", "minLength": 1},
        "github_id": {"type": "string", "pattern": "^[A-Za-z0-9-]+$"},
        "track": {"enum": list(TRACKS), "description": "10min_16mb (record) or non_record_16mb"},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                 "description": "date in the folder name; default: an existing folder's, else today"},
        "blurb": {"type": "string"},
        "based_on": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "object", "additionalProperties": False, "required": ["record"],
                     "properties": {"record": {"type": "string"}, "note": {"type": "string"},
                                    "pr": {"type": "integer"}, "author": {"type": "string"}}},
                ]
            },
            "description": "records or pull requests this one builds on (credited in README)",
        },
        "compare_to": {
            "oneOf": [
                {"type": "string", "minLength": 1,
                 "description": "a record folder, records/<track>/<folder>, relative to the repository root "
                                "(the folder that holds records/); its seed logs (else its submission.json) "
                                "give the figures"},
                {"type": "object", "additionalProperties": False, "anyOf": [{"required": ["val_loss"]},
                                                                            {"required": ["val_bpb"]}],
                 "properties": {
                     "record": {"type": "string", "description": "name shown in README"},
                     "val_loss": {"type": "array", "minItems": 1,
                                  "items": {"type": "number", "exclusiveMinimum": 0},
                                  "description": "per-seed val_loss (nats) of the record to beat"},
                     "val_bpb": {"type": "array", "minItems": 1,
                                 "items": {"type": "number", "exclusiveMinimum": 0},
                                 "description": "per-seed val_bpb, same seeds in the same order"}}},
            ],
            "description": "the record this one claims to beat: golf-pack states the significance of the "
                           "improvement (policy readme-2026-03: 0.005 nats at p < 0.01) in README.md and "
                           "submission.json; golf-pack --against PATH overrides it. The recipe is part of "
                           "train_gpt.py (its sha256), so set it before the runs",
        },
    },
}

CODE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "wrap": {"enum": ["none", "lzma_b85"], "default": "none",
                 "description": "none: train_gpt.py is the readable source; lzma_b85: train_gpt.py is "
                                "self-extracting (lzma + base85) and train_gpt_readable.py holds the source"},
    },
}

_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _hp_schema(hp) -> dict:
    node: dict = {"type": _JSON_TYPES[hp.kind], "default": hp.default}
    if hp.doc:
        node["description"] = f"{hp.doc} (env {hp.env})"
    else:
        node["description"] = f"env {hp.env}"
    if hp.choices:
        node["enum"] = list(hp.choices)
    if hp.minimum is not None:
        node["minimum"] = hp.minimum
    return node


def _insert(tree: dict, parts: list[str], leaf: dict) -> None:
    node = tree
    for part in parts[:-1]:
        props = node.setdefault("properties", {})
        node = props.setdefault(part, {"type": "object", "additionalProperties": False, "properties": {}})
    node.setdefault("properties", {})[parts[-1]] = leaf


def build_schema() -> dict:
    schema: dict = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "golf-pack recipe",
        "type": "object",
        "additionalProperties": False,
        "required": ["identity", "seeds"],
        "properties": {
            "identity": IDENTITY,
            "seeds": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0},
                      "description": "seeds to run; the first is the script's default SEED"},
            "code": CODE,
        },
    }
    for section in ("data", "model", "train", "export", "eval", "ttt"):
        schema["properties"][section] = {"type": "object", "additionalProperties": False, "properties": {}}
    for hp in all_hparams():
        if hp.path.startswith("seeds"):
            continue
        _insert(schema, hp.path.split("."), _hp_schema(hp))
    schema["properties"]["ttt"]["properties"]["allow_illegal_ttt"] = {
        "type": "boolean", "default": False,
        "description": "must be true for ttt.mode pre_eval, which trains on validation tokens before "
                       "scoring them: not allowed for records, only to reproduce illegal submissions "
                       "(track non_record_16mb only)"}
    return schema


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())
