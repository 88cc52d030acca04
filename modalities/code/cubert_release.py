"""CuBERT's released Python benchmark files, read into this project's benchmark examples.

Format source: google-research/google-research ``cubert/README.md`` ("Benchmarks and Fine-Tuned
Models"), the reference pointer model ``cubert/finetune_varmisuse_pointer_lib.py`` (how the repair
masks are scored) and google-research/plur ``plur/stage_1/cubert_dataset.py`` /
``cubert_variable_misuse_repair_dataset.py`` (shard names and the masks' invariants).

A release folder holds one sub-folder per task (``gs://cubert/20200621_Python/<name>_datasets``),
each with sharded JSON-lines files ``train.jsontxt-NNNNN-of-NNNNN``, ``dev.jsontxt-...`` and
``eval.jsontxt-...`` (dev = our valid, eval = our test). A task folder itself may be given too.

Records (one JSON object a line):
- classification tasks: ``function`` (source text), ``label`` (a string), ``info`` (provenance);
  function-docstring adds ``docstring``. Labels map onto ours: "Correct" -> 0, the bug
  ("Variable misuse", "Swapped operands", "Wrong binary operator") -> 1; function-docstring
  "Correct" -> 0, "Incorrect" -> 1 (ours: 1 = the docstring belongs to another function);
  exception: the index in ``EXCEPTION_LABELS`` (upstream's list, in its order).
- variable-misuse localization and repair: ``function`` (a list of CuBERT subtokens),
  ``error_location_mask``, ``candidate_mask``, ``target_mask`` (0/1 lists as long as
  ``function``; exactly one error location; position 0 = bug-free, then no targets) and
  ``provenance``. Mapped to ``tokens`` + ``error_location`` (None = bug-free) + ``candidates`` /
  ``targets`` (token indices); ``tasks.data.code.featurise`` turns those into ids and pointers.

A record that does not fit is skipped and counted under "<field>: <what>" in a ``ReadStats``;
the first few are kept with their file and line (``RecordStats.examples``). A split with no
usable record at all is a ``ValueError`` naming the file and the field of its first bad record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..stats import ReadStats

# our task name -> the release's folder name
RELEASE_FOLDERS = {
    "function_docstring": "function_docstring_datasets",
    "exception_type": "exception_datasets",
    "variable_misuse": "variable_misuse_datasets",
    "swapped_operands": "swapped_operands_datasets",
    "wrong_binary_operator": "wrong_binary_operator_datasets",
    "variable_misuse_repair": "variable_misuse_repair_datasets",
}
# our split name -> the release's shard prefix
RELEASE_SPLITS = {"train": "train", "valid": "dev", "test": "eval"}
# the exception classes in the order the README lists them ("None" never occurs; kept so ids are stable)
EXCEPTION_LABELS = (
    "ValueError", "KeyError", "AttributeError", "TypeError", "OSError", "IOError", "ImportError", "IndexError",
    "DoesNotExist", "KeyboardInterrupt", "StopIteration", "AssertionError", "SystemExit", "RuntimeError",
    "HTTPError", "UnicodeDecodeError", "NotImplementedError", "ValidationError", "ObjectDoesNotExist", "NameError",
    "None",
)
BINARY_LABELS = {
    "variable_misuse": {"Correct": 0, "Variable misuse": 1},
    "swapped_operands": {"Correct": 0, "Swapped operands": 1},
    "wrong_binary_operator": {"Correct": 0, "Wrong binary operator": 1},
    "function_docstring": {"Correct": 0, "Incorrect": 1},
}
LABELS = {**BINARY_LABELS, "exception_type": {name: i for i, name in enumerate(EXCEPTION_LABELS)}}


class BadRecord(ValueError):
    """A record that does not fit the release's format; ``field`` names the offending field."""

    def __init__(self, field_name: str, what: str):
        super().__init__(f"field {field_name!r}: {what}")
        self.field, self.what = field_name, what


@dataclass
class RecordStats(ReadStats):
    """ReadStats that also keep where the first bad records were."""

    examples: list[str] = field(default_factory=list)  # "file:line: field 'x': ..." of the first bad records

    def bad(self, where: str, err: BadRecord, keep: int = 5) -> None:
        self.skip(f"{err.field}: {err.what}")
        if len(self.examples) < keep:
            self.examples.append(f"{where}: {err}")

    def to_dict(self) -> dict:
        return {"files": self.files, "records": self.records, "skipped": dict(self.skipped),
                "first_bad_records": list(self.examples)}


def task_folder(root: str | Path, task: str) -> Path:
    """The folder holding ``task``'s shards: <root>/<release folder>, or <root> itself when its shards are there."""
    if task not in RELEASE_FOLDERS:
        raise ValueError(f"unknown task {task!r}; CuBERT's release has {list(RELEASE_FOLDERS)}")
    root = Path(root)
    sub = root / RELEASE_FOLDERS[task]
    return sub if sub.is_dir() else root


def shards(root: str | Path, task: str, split: str) -> list[Path]:
    """The split's shard files, sorted (``<split>.jsontxt-*``; any prefix before it is allowed).
    Files with "githubcommits" in their name are not benchmark shards (PLUR's reader leaves them out too)."""
    folder = task_folder(root, task)
    prefix = RELEASE_SPLITS[split]
    return sorted(p for p in folder.glob(f"*{prefix}.jsontxt-*") if p.is_file() and "githubcommits" not in p.name)


def is_release(root: str | Path) -> bool:
    """Whether ``root`` holds CuBERT release shards (in task sub-folders or itself)."""
    root = Path(root)
    if not root.is_dir():
        return False
    return any(root.glob("*.jsontxt-*")) or any(root.glob("*_datasets/*.jsontxt-*"))


def _text(rec: dict, name: str) -> str:
    if name not in rec:
        raise BadRecord(name, "missing")
    value = rec[name]
    if not isinstance(value, str):
        raise BadRecord(name, f"expected a string, got {type(value).__name__}")
    return value


def _mask(rec: dict, name: str, length: int) -> list[int]:
    if name not in rec:
        raise BadRecord(name, "missing")
    m = rec[name]
    if not isinstance(m, list) or any(v not in (0, 1) or isinstance(v, bool) for v in m):
        raise BadRecord(name, "expected a list of 0 / 1")
    if len(m) != length:
        raise BadRecord(name, f"has {len(m)} entries for {length} tokens of 'function'")
    return m


def classification_example(rec: dict, task: str) -> dict:
    """One classification record -> {"source", "label", "label_name", "info"[, "docstring"]}."""
    source = _text(rec, "function")
    name = _text(rec, "label")
    labels = LABELS[task]
    if name not in labels:
        shown = list(labels) if len(labels) <= 4 else f"one of {len(labels)} exception names"
        raise BadRecord("label", f"{name[:40]!r} is not a label of {task} ({shown})")
    out = {"source": source, "label": labels[name], "label_name": name, "info": rec.get("info", "")}
    if task == "function_docstring":
        out["docstring"] = _text(rec, "docstring")
    return out


def repair_example(rec: dict) -> dict:
    """One localization-and-repair record -> {"tokens", "error_location", "candidates", "targets",
    "label", "label_name", "info"}; ``error_location`` None for a bug-free example (mask at 0)."""
    if "function" not in rec:
        raise BadRecord("function", "missing")
    tokens = rec["function"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise BadRecord("function", "expected a non-empty list of subtoken strings (the repair task is pre-tokenised)")
    err = _mask(rec, "error_location_mask", len(tokens))
    cand = _mask(rec, "candidate_mask", len(tokens))
    tgt = _mask(rec, "target_mask", len(tokens))
    if sum(err) != 1:
        raise BadRecord("error_location_mask", f"has {sum(err)} ones; exactly one is set in every example")
    where = err.index(1)
    targets = [i for i, v in enumerate(tgt) if v]
    if where == 0 and targets:
        raise BadRecord("target_mask", "has targets in a bug-free example (error_location_mask at 0)")
    if where != 0 and not targets:
        raise BadRecord("target_mask", "has no target in a buggy example")
    return {"tokens": tokens, "error_location": None if where == 0 else where,
            "candidates": [i for i, v in enumerate(cand) if v], "targets": targets,
            "label": int(where != 0), "label_name": "Correct" if where == 0 else "Variable misuse",
            "info": rec.get("provenance", "")}


def read_json_lines(path: Path, stats: RecordStats, convert: Callable[[dict], Any]) -> list:
    """Every non-blank line of a JSON-lines file, as ``convert(record)``; a line that is not a JSON
    object, or that ``convert`` refuses with a BadRecord, is skipped and counted in ``stats`` (file:line)."""
    out = []
    stats.files += 1
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise BadRecord("<line>", f"expected a JSON object, got {type(rec).__name__}")
                example = convert(rec)
            except json.JSONDecodeError:
                stats.bad(f"{path}:{n}", BadRecord("<line>", "not JSON"))
                continue
            except BadRecord as e:
                stats.bad(f"{path}:{n}", e)
                continue
            stats.records += 1
            out.append(example)
    return out


def read_release_split(root: str | Path, task: str, split: str, stats: RecordStats | None = None) -> list[dict]:
    """Every usable example of one task's split, in shard and line order; bad records counted in ``stats``."""
    stats = stats if stats is not None else RecordStats(unit="examples")
    files = shards(root, task, split)
    if not files:
        folder = task_folder(root, task)
        where = folder if folder != Path(root) or any(folder.glob("*.jsontxt-*")) else folder / RELEASE_FOLDERS[task]
        raise FileNotFoundError(f"{where} has no {RELEASE_SPLITS[split]}.jsontxt-* shards ({task}, split {split}); "
                                f"download gs://cubert/20200621_Python/{RELEASE_FOLDERS[task]} there")
    convert = repair_example if task == "variable_misuse_repair" else (lambda rec: classification_example(rec, task))
    out = []
    for path in files:
        out += read_json_lines(path, stats, convert)
    if not out:
        first = stats.examples[0] if stats.examples else f"{files[0]}: no records"
        raise ValueError(f"no usable {task} record in {len(files)} {RELEASE_SPLITS[split]} shard(s); first: {first}")
    return out


# --- CuBERT subtokens -> words (for a vocabulary other than CuBERT's own) ---------------------
def _unescape(text: str) -> str:
    """tensor2tensor's token unescaping: ``\\u`` -> "_", ``\\\\`` -> "\\", ``\\NNN;`` -> chr(NNN)."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u":
                out.append("_")
                i += 2
                continue
            if nxt == "\\":
                out.append("\\")
                i += 2
                continue
            end = text.find(";", i + 1)
            if end > i + 1 and text[i + 1 : end].isdigit():
                out.append(chr(int(text[i + 1 : end])))
                i = end + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def subtoken_words(tokens: list[str]) -> list[tuple[str, int]]:
    """CuBERT subtokens -> (word, index of its first subtoken): a subtoken ending in "_" ends a word."""
    words, start, buf = [], 0, []
    for i, t in enumerate(tokens):
        if not buf:
            start = i
        buf.append(t)
        if t.endswith("_"):  # an escaped text holds no bare "_" but the end mark
            words.append((_unescape("".join(buf)[:-1]), start))
            buf = []
    if buf:
        words.append((_unescape("".join(buf)), start))
    return words
