"""A fine-tuned CuBERT bug detector applied to any Python functions (``tessera eval code-predict``).

``load_finetuned(run)`` rebuilds the system a fine-tuning run trained through
``tasks.runs.load_system`` (a ``tessera fit --config configs/code/{varmisuse,repair}_tiny.yaml``
run, or a run folder ``tessera eval code`` kept: config.yaml + weights, read with
``weights_only=True`` or from safetensors); its data module gives the task, tokenizer and length.
``predict(...)`` scores functions:

- the binary bug tasks (variable_misuse, wrong_binary_operator, swapped_operands): the
  probability that the function holds the task's bug;
- variable_misuse_repair (the pointer system): the probability of a misused variable
  (1 - the localisation pointer's mass on position 0), the occurrence it points at (name, line)
  and the variable it would put there.

Function-Docstring and Exception Type need inputs a plain function does not have (a docstring
pair, a hole) and are refused with a message.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from modalities.code import CodeTokenizer, load_code_tokenizer, local_variables

from .code import CodeClassifierSystem, VarMisusePointerSystem
from .data.code import collate_examples, featurise

BINARY = ("variable_misuse", "wrong_binary_operator", "swapped_operands")
POINTER = "variable_misuse_repair"


def load_finetuned(run: str | Path):
    """(system in eval mode, tokenizer, task, max_length) of a fine-tuning run (folder, log folder or checkpoint)."""
    from .runs import load_system

    system, data, _ = load_system(run, with_data=True)
    task = getattr(data, "task", None)
    if task not in (*BINARY, POINTER):
        raise ValueError(f"{run}: its task is {task!r}; prediction on plain functions covers {(*BINARY, POINTER)} "
                         "(function_docstring and exception_type need a docstring pair or a hole)")
    if not isinstance(system, CodeClassifierSystem | VarMisusePointerSystem) or \
            isinstance(system, VarMisusePointerSystem) != (task == POINTER):
        raise ValueError(f"{run}: its system {type(system).__name__} does not fit task {task!r}; give a fine-tuning run "
                         "(configs/code/varmisuse_tiny.yaml, repair_tiny.yaml, ...)")
    tok = Path(data.tokenizer_file)
    if not tok.exists():
        raise FileNotFoundError(f"{run}: its tokenizer {tok} is gone; rebuild it (tessera prepare code-tokenizer) or "
                                "re-run the fine-tuning")
    return system.eval(), load_code_tokenizer(tok), task, int(data.max_length)


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


def predict_paths(model: str | Path, paths: list[str], out: Path, max_chars: int = 20000, batch_size: int = 32,
                  top: int = 10, progress: bool = True) -> int:
    """Score every function under ``paths`` with the fine-tuned run ``model``; JSON lines to ``out``
    (most suspicious first, skipped ones last with the reason); print the ``top`` ones."""
    from tqdm.auto import tqdm

    from .embed.code import collect

    system, tok, task, max_length = load_finetuned(model)
    sources, rows, skipped_files = collect(paths, "function", max_chars)
    functions = [{**r, "source": s} for r, s in zip(rows, sources, strict=True)]
    preds = predict(system, tok, task, functions, max_length, batch_size,
                    progress=(lambda it: tqdm(it, desc="scoring", unit="batch")) if progress else None)
    scored = sorted((r for r in preds if "bug_probability" in r), key=lambda r: -r["bug_probability"])
    skipped = [r for r in preds if "skipped" in r]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in scored + skipped))
    reasons = dict(Counter(r["skipped"] for r in skipped))
    print(f"{task}: {len(scored)} functions scored, {len(skipped)} skipped {reasons}, files skipped: "
          f"{dict(skipped_files)} -> {out}")
    for r in scored[:top]:
        extra = ""
        if task == POINTER:
            loc = r["location"]
            extra = f"  `{loc['name']}` at line {loc['line']}" + (f" -> `{r['repair']}`?" if r["repair"] else "")
        print(f"  {r['bug_probability']:.3f}  {r['path']}:{r['line']} {r['name']}{extra}")
    return 0
