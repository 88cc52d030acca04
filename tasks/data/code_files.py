"""The benchmark files a code task reads: this project's <task>/<split>.jsonl (``tessera prepare
code-benchmark``) or CuBERT's released shards (``modalities.code.cubert_release``), each record
checked; bad records are skipped and counted with their file, line and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the fields every example of our own benchmark files carries, per task ("*": every task)
_REQUIRED = {"*": {"source": str, "label": int}, "function_docstring": {"docstring": str},
             "variable_misuse_repair": {"candidate_spans": list, "target_spans": list}}


def _read_jsonl(path: Path, task: str, stats) -> list[dict]:
    """Our benchmark's <task>/<split>.jsonl; records missing a field (or of the wrong type) are skipped and counted."""
    from modalities.code.cubert_release import BadRecord, read_json_lines

    fields = {**_REQUIRED["*"], **_REQUIRED.get(task, {})}

    def check(rec: dict) -> dict:
        for name, kind in fields.items():
            if name not in rec:
                raise BadRecord(name, "missing")
            if not isinstance(rec[name], kind) or isinstance(rec[name], bool):
                raise BadRecord(name, f"expected {kind.__name__}, got {type(rec[name]).__name__}")
        if task == "variable_misuse_repair" and "error_span" not in rec:
            raise BadRecord("error_span", "missing (null for a bug-free example)")
        return rec

    rows = read_json_lines(path, stats, check)
    if not rows:
        first = stats.examples[0] if stats.examples else "the file is empty"
        raise ValueError(f"{path} holds no usable {task} example; first: {first}")
    return rows


def has_split(benchmark: Path, task: str, split: str) -> bool:
    """Whether ``benchmark`` (ours, or CuBERT's release) holds ``task``'s ``split``."""
    from modalities.code.cubert_release import is_release, shards

    if is_release(benchmark):
        return bool(shards(benchmark, task, split))
    return (Path(benchmark) / task / f"{split}.jsonl").is_file()


def read_split(benchmark: Path, task: str, split: str, max_examples: int | None = None, seed: int = 0,
               stats=None) -> list[dict]:
    """The examples of <benchmark>/<task>/<split>.jsonl, or of CuBERT's released shards when
    ``benchmark`` holds them (``modalities.code.cubert_release``); with ``max_examples``, a seeded
    sample of that many in file order (what fine-tuning and ``tessera eval code-misuse`` both
    read). Bad records are skipped and counted in ``stats`` (a ``RecordStats``)."""
    from modalities.code.cubert_release import RecordStats, is_release, read_release_split

    stats = stats if stats is not None else RecordStats(unit="examples")
    if is_release(benchmark):
        rows = read_release_split(benchmark, task, split, stats)
    else:
        path = Path(benchmark) / task / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; build it with `tessera prepare code-benchmark --out {benchmark} "
                                    f"--tasks {task}`, or give a folder of CuBERT's released {task} shards")
        rows = _read_jsonl(path, task, stats)
    if max_examples is not None and len(rows) > max_examples:
        g = np.random.default_rng(seed)
        rows = [rows[i] for i in sorted(g.choice(len(rows), max_examples, replace=False))]
    return rows
