"""A fine-tuned CuBERT bug detector applied to any Python functions.

``load_finetuned(config, ckpt)`` rebuilds the system a ``tessera fit --config configs/code/...``
run trained (the YAML gives the system, the encoder's shape, the task and the tokenizer; the
checkpoint its weights, read with ``weights_only=True``), or one ``scripts/code_eval.py`` kept
(its run folder's config.yaml and model.safetensors). ``predict(...)`` scores functions:

- the binary bug tasks (variable_misuse, wrong_binary_operator, swapped_operands): the
  probability that the function holds the task's bug;
- variable_misuse_repair (the pointer system): the probability of a misused variable
  (1 - the localisation pointer's mass on position 0), the occurrence it points at (name, line)
  and the variable it would put there.

Function-Docstring and Exception Type need inputs a plain function does not have (a docstring
pair, a hole) and are refused with a message.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import (
    BiLSTMConfig,
    BiLSTMEncoder,
    CodeTokenizer,
    load_code_tokenizer,
    local_variables,
)

from .code import CodeClassifierSystem, VarMisusePointerSystem, encoder_config
from .data.code import collate_examples, featurise, resolve

BINARY = ("variable_misuse", "wrong_binary_operator", "swapped_operands")
POINTER = "variable_misuse_repair"


def load_finetuned(config_yaml: str | Path, ckpt: str | Path):
    """(system in eval mode, tokenizer, task, max_length) from a fine-tuning YAML and its checkpoint."""
    raw = yaml.safe_load(Path(config_yaml).read_text())
    model, data = raw.get("model") or {}, (raw.get("data") or {}).get("init_args") or {}
    task, tokenizer = data.get("task"), data.get("tokenizer")
    if task not in (*BINARY, POINTER):
        raise ValueError(f"{config_yaml}: data.init_args.task is {task!r}; prediction on plain functions covers "
                         f"{(*BINARY, POINTER)} (function_docstring and exception_type need a docstring pair or a hole)")
    module, _, name = model.get("class_path", "").rpartition(".")
    cls = getattr(importlib.import_module(module), name) if module else None
    if cls not in (CodeClassifierSystem, VarMisusePointerSystem) or (cls is VarMisusePointerSystem) != (task == POINTER):
        raise ValueError(f"{config_yaml}: model {model.get('class_path')!r} does not fit task {task!r}; give the YAML the "
                         "checkpoint was fine-tuned with (configs/code/varmisuse_tiny.yaml, repair_tiny.yaml, ...)")
    args = {k: v for k, v in (model.get("init_args") or {}).items() if k not in ("encoder", "pretrained")}
    enc_cfg = encoder_config(config_yaml)
    lstm = model["init_args"]["encoder"].get("class_path", "").endswith("BiLSTMEncoder")
    encoder = BiLSTMEncoder(BiLSTMConfig(**enc_cfg)) if lstm else TokenEncoder(TokenEncoderConfig(**enc_cfg))
    system = cls(encoder, **args)
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"fine-tuned checkpoint {path} does not exist; give the .ckpt of a fine-tuning run "
                                "or the model.safetensors scripts/code_eval.py keeps")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    system.load_state_dict(state, strict=True)
    return system.eval(), load_code_tokenizer(resolve(tokenizer)), task, int(data.get("max_length", 512))


def _line_of(source: str, offset: int, first_line: int) -> int:
    return first_line + source.count("\n", 0, offset)


@torch.inference_mode()
def predict(system, tok: CodeTokenizer, task: str, functions: list[dict], max_length: int = 512,
            batch_size: int = 32, progress=None) -> list[dict]:
    """One dict per function ({"source", "path", "name", "line"} each): ``bug_probability`` and, for
    the pointer, ``location`` / ``repair``; a function whose variables cannot be read (no locals,
    or all beyond ``max_length``) gets ``skipped`` with the reason instead."""
    items, keep, out = [], [], []
    for fn in functions:
        row = {key: fn[key] for key in ("path", "name", "line") if key in fn}
        ex = {"source": fn["source"], "label": 0}
        if task == POINTER:
            try:
                occ = local_variables(fn["source"])
            except (SyntaxError, ValueError) as e:
                out.append({**row, "skipped": f"not one parsable function ({type(e).__name__})"})
                continue
            if len(occ) < 2:
                out.append({**row, "skipped": "fewer than two local variables: nothing to misuse"})
                continue
            spans = sorted({(s, e) for v in occ.values() for s, e, _ in v})
            ex.update(error_span=None, candidate_spans=[list(s) for s in spans], target_spans=[])
        f = featurise(ex, task, tok, max_length)
        if f is None or (task == POINTER and len(f["candidates"]) < 2):
            out.append({**row, "skipped": f"its variables lie beyond max_length={max_length} tokens"})
            continue
        items.append(f)
        keep.append(len(out))
        out.append(row)
    batches = range(0, len(items), batch_size)
    for start in progress(batches) if progress is not None else batches:
        chunk = items[start : start + batch_size]
        batch = collate_examples(chunk, tok.pad_id)
        idx = keep[start : start + batch_size]
        if task == POINTER:
            loc, rep = system(batch)
            p_loc = loc.softmax(-1)
            for b, i in enumerate(idx):
                fn = functions[i]
                src = fn["source"]
                spans = tok.encode(src).spans  # token position k is subword k - 1 ([CLS] first)
                where = int(p_loc[b, 1:].argmax()) + 1  # the most suspicious occurrence
                fix = int(rep[b].argmax())
                (ls, le), (rs, re) = spans[where - 1].tolist(), spans[fix - 1].tolist()
                name_at = _name_at(src, ls, le)
                repair = _name_at(src, rs, re)
                out[i].update(bug_probability=round(1.0 - float(p_loc[b, 0]), 4),
                              location={"name": name_at, "line": _line_of(src, ls, fn.get("line", 1)),
                                        "probability": round(float(p_loc[b, where]), 4)},
                              repair=repair if repair != name_at else None)
        else:
            p = system(batch).softmax(-1)[:, 1]
            for b, i in enumerate(idx):
                out[i]["bug_probability"] = round(float(p[b]), 4)
    return out


def _name_at(source: str, start: int, end: int) -> str:
    """The identifier a subword belongs to (a candidate position is a name's first subword)."""
    while end < len(source) and (source[end].isalnum() or source[end] == "_"):
        end += 1
    return source[start:end]
