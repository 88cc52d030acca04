"""Variable-Misuse detection with the pretrained masked-LM head itself, no fine-tuning.

A misused variable is one the language model would not have written there. For every *use* of a
local variable (the sites the benchmark's bugs are drawn from), its subwords are masked and the
MLM head scores the variable written there against every other local variable of the function;
the use's *margin* is the observed name's score minus the best alternative's (negative: the model
prefers another variable). Per function, the use with the lowest margin is the suspect:

- classification: buggy when a statistic of the margins passes a threshold chosen on the valid
  split: minus the lowest margin, or the log posterior odds of a bug (``FunctionScore.statistic``);
- localisation: the suspect's position (or "no bug" below the threshold, as the pointer's 0);
- repair: the alternative the head prefers at the suspect.

This is the "naturalness" detector of bug-finding work on language models of code; it needs the
pretrained head, so the from-scratch Transformer and the BiLSTM have no counterpart. A name's
score is the mean log-probability of its subwords at the masked positions (the observed name has
exactly as many subwords as masks; an alternative with more is scored on its first ones, one
with fewer on all of its own).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from modalities.code import CodeTokenizer, local_variables

from .data.code import featurise, read_split
from .metrics import auroc
from .text import MaskedLMSystem


@dataclass
class UseScore:
    """One use of a local variable, masked and scored (scores: mean log-probability per subword)."""

    start: int  # character span of the use in the source
    end: int
    name: str  # the variable written there
    own: float  # the written name's score
    others: dict[str, float]  # every other local variable's score

    @property
    def best(self) -> str:
        """The alternative the head prefers most."""
        return max(self.others, key=self.others.get)

    @property
    def margin(self) -> float:
        """The written name's score minus the best alternative's (negative: another name fits better)."""
        return self.own - self.others[self.best]

    @property
    def evidence(self) -> float:
        """log sum over the alternatives v of p(v) / p(written): how much the head would rather see another."""
        return float(np.logaddexp.reduce([v - self.own for v in self.others.values()]))


STATISTICS = ("min_margin", "log_odds")


@dataclass
class FunctionScore:
    uses: list[UseScore] = field(default_factory=list)  # uses inside the first max_length tokens
    locals: int = 0  # local variables with subwords (the candidates of a misuse)
    error: str | None = None  # why the source could not be scored (it does not parse as one function)

    @property
    def suspect(self) -> UseScore | None:
        """The use with the lowest margin: the predicted bug location."""
        return min(self.uses, key=lambda u: u.margin) if self.uses else None

    def statistic(self, kind: str = "min_margin") -> float:
        """How buggy the function looks (higher: buggier); -inf without a scorable use.

        "min_margin": minus the lowest margin. "log_odds": the log posterior odds of a bug if the
        head's probabilities were calibrated and the bug model the benchmark's (one use, drawn
        uniformly, given a name drawn uniformly from the other locals):
        log sum_i sum_v p_i(v) / p_i(written_i) - log(uses) - log(locals - 1).
        """
        if kind not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {kind!r}")
        if not self.uses:
            return -math.inf
        if kind == "min_margin":
            return -self.suspect.margin
        return float(np.logaddexp.reduce([u.evidence for u in self.uses]) - math.log(len(self.uses))
                     - math.log(self.locals - 1))


def load_mlm(run: str | Path) -> tuple[MaskedLMSystem, Path | None]:
    """(the masked-LM system of a ``tessera fit --config configs/code/mlm_*.yaml`` run, its data
    module's tokenizer path or None): ``run`` is the run folder, its log folder or a .ckpt in it
    (``tasks.runs.load_system``: config.yaml rebuilds it, weights read with ``weights_only=True``)."""
    from .runs import load_system

    system, data, _ = load_system(run, with_data=True)
    if not isinstance(system, MaskedLMSystem) or not hasattr(system, "head"):
        raise ValueError(f"{run} is a {type(system).__name__} run; the detector needs a masked-LM run "
                         "(tessera fit --config configs/code/mlm_*.yaml) with its MLM head")
    return system, getattr(data, "tokenizer_file", None)


class MisuseScorer:
    """Margins of every local-variable use of functions, from a masked LM's own head.

    Args:
        encoder: the pretrained token encoder.
        head: its MLM head (``MaskedLMSystem.head``: hidden states -> vocabulary logits).
        tokenizer: the encoder's code tokenizer.
        max_length: tokens per sequence, [CLS] and [SEP] included; uses beyond it are not scored.
        batch_size: masked sequences per forward pass (each use is one sequence).
        precision: "bf16" (autocast) or "32".
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, tokenizer: CodeTokenizer, max_length: int = 256,
                 batch_size: int = 64, precision: str = "bf16"):
        if precision not in ("bf16", "32"):
            raise ValueError(f"precision must be 'bf16' or '32', got {precision!r}")
        self.encoder, self.head, self.tok = encoder.eval(), head.eval(), tokenizer
        self.max_length, self.batch_size, self.precision = max_length, batch_size, precision

    @classmethod
    def from_system(cls, system: MaskedLMSystem, tokenizer: CodeTokenizer, **kw) -> MisuseScorer:
        return cls(system.encoder, system.head, tokenizer, **kw)

    def _queries(self, index: int, source: str) -> tuple[np.ndarray, list[tuple[int, list[int], UseScore]], dict]:
        """Token ids of one function, its use queries (index, masked positions, use) and each name's subwords."""
        enc = self.tok.encode(source)
        n = min(len(enc.ids), self.max_length - 2)
        ids = np.concatenate([[self.tok.cls_id], enc.ids[:n], [self.tok.sep_id]]).astype(np.int64)
        occ = local_variables(source)  # SyntaxError / ValueError: the caller records and skips it
        starts, ends = enc.spans[:, 0], enc.spans[:, 1]

        def subwords(s: int, e: int) -> list[int]:  # token indices of the identifier at [s, e)
            # a DEDENT before a line's first name has the empty span (s, s): it is not the name's
            return [k for k in range(int(np.searchsorted(starts, s, "left")), int(np.searchsorted(starts, e, "left")))
                    if ends[k] > starts[k]]

        names = {name: [int(enc.ids[k]) for k in subwords(s, e)] for name, spans in occ.items() for s, e, _ in spans[:1]}
        names = {k: v for k, v in names.items() if v}
        queries = []
        if len(names) >= 2:
            for name, spans in occ.items():
                for s, e, is_use in spans:
                    pos = subwords(s, e)
                    if is_use and name in names and pos and pos[-1] < n:
                        queries.append((index, [p + 1 for p in pos], UseScore(s, e, name, math.nan, {})))
        return ids, queries, names

    @torch.no_grad()
    def score(self, sources: Sequence[str], progress: bool = False) -> list[FunctionScore]:
        """One ``FunctionScore`` per source (each the source of one function); a source that does not
        parse gets no uses (so it counts as clean) and its ``error`` set."""
        out = [FunctionScore() for _ in sources]
        seqs, names_of, queries = [], [], []
        for i, src in enumerate(sources):
            try:
                ids, qs, names = self._queries(i, src)
            except (SyntaxError, ValueError) as e:  # skipped and counted, never fatal mid-run
                out[i].error = f"does not parse as one function: {e}"
                ids, qs, names = np.zeros(0, dtype=np.int64), [], {}
            out[i].locals = len(names)
            seqs.append(ids)
            names_of.append(names)
            queries.extend(qs)
        device = next(self.encoder.parameters()).device
        bar = tqdm(total=len(queries), desc="masked uses", unit="use", disable=not progress)
        for b in range(0, len(queries), self.batch_size):
            chunk = queries[b : b + self.batch_size]
            T = max(len(seqs[i]) for i, _, _ in chunk)
            ids = torch.full((len(chunk), T), self.tok.pad_id, dtype=torch.long)
            mask = torch.zeros(len(chunk), T, dtype=torch.long)
            for r, (i, pos, _) in enumerate(chunk):
                ids[r, : len(seqs[i])] = torch.from_numpy(seqs[i])
                mask[r, : len(seqs[i])] = 1
                ids[r, pos] = self.tok.mask_id
            rows = torch.tensor([r for r, (_, pos, _) in enumerate(chunk) for _ in pos])
            cols = torch.tensor([p for _, pos, _ in chunk for p in pos])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                hidden = self.encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                logits = self.head(hidden[rows.to(device), cols.to(device)])  # (M, V): masked positions only
            logp = logits.float().log_softmax(-1).cpu()  # (M, V)
            at = 0
            for i, pos, use in chunk:
                lp = logp[at : at + len(pos)]  # (k, V)
                at += len(pos)
                scores = {name: lp[torch.arange(min(len(pos), len(sub))), sub[: len(pos)]].mean().item()
                          for name, sub in names_of[i].items()}
                use.own = scores.pop(use.name)
                use.others = scores
                out[i].uses.append(use)
            bar.update(len(chunk))
        bar.close()
        return out


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold t (buggy when score > t) with the highest accuracy on (scores, labels);
    midpoints between sorted scores, ties to the highest threshold."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    finite = np.unique(x[np.isfinite(x)])
    mids = (finite[:-1] + finite[1:]) / 2
    cands = np.concatenate([[np.inf], mids[::-1], finite[:1] - 1])  # descending: all clean ... all buggy
    acc = [((x > t) == y).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def misuse_metrics(scores: Sequence[FunctionScore], examples: Sequence[dict], threshold: float,
                   statistic: str = "min_margin") -> dict:
    """Classification accuracy (buggy when the statistic exceeds ``threshold``) and AUROC; with
    ``error_span`` / ``target_spans`` (the repair task's examples) also localisation (bug-free
    included), repair and joint accuracy (over buggy ones), as ``tasks.code.VarMisusePointerSystem``
    defines them: the suspect use is the location, its best alternative the repair."""
    labels = [int(ex["label"]) for ex in examples]
    stats = [s.statistic(statistic) for s in scores]
    pred = [x > threshold for x in stats]
    out = {"examples": len(examples), "buggy": sum(labels), "statistic": statistic, "threshold": threshold,
           "accuracy": float(np.mean([p == bool(y) for p, y in zip(pred, labels, strict=True)])),
           "auroc": auroc(stats, labels),
           "scored_uses": sum(len(s.uses) for s in scores),
           "functions_without_scorable_use": sum(not s.uses for s in scores),
           "functions_not_parsed": sum(s.error is not None for s in scores)}
    if examples and "error_span" in examples[0]:
        loc, rep, joint = [], [], []
        for s, p, ex in zip(scores, pred, examples, strict=True):
            sus = s.suspect
            if ex["error_span"] is None:
                loc.append(not p)
                continue
            right = {ex["source"][a:b] for a, b in ex["target_spans"]}
            at_bug = p and sus is not None and sus.start == ex["error_span"][0]
            fixed = sus is not None and sus.best in right
            loc.append(at_bug)
            rep.append(fixed)
            joint.append(at_bug and fixed)
        out.update(localization=float(np.mean(loc)), repair=float(np.mean(rep)) if rep else math.nan,
                   joint=float(np.mean(joint)) if joint else math.nan)
    return out


def site_effect(clean: Sequence[FunctionScore], buggy: Sequence[FunctionScore], bug_starts: Sequence[int]) -> dict:
    """How a bug moves the scores, over pairs (the same function clean and buggy; ``bug_starts``: the
    character where each pair's misused name starts, the same in both twins).

    Returns the share of pairs in which the buggy twin looks buggier under each statistic, and the
    mean margin at the bug's use in the buggy twin, at the same use in the clean twin, and at the
    buggy twin's other uses: a head that notices the bug but whose function-level statistic does
    not shows a low first figure next to shares near one half."""
    out = {"pairs": len(bug_starts)}
    for k in STATISTICS:
        d = np.array([b.statistic(k) - c.statistic(k) for c, b in zip(clean, buggy, strict=True)])
        out[k] = {"buggy_higher": float((d > 0).mean()), "equal": float((d == 0).mean())}
    at_bug, same_use_clean, others = [], [], []
    for c, b, s in zip(clean, buggy, bug_starts, strict=True):
        for u in b.uses:
            (at_bug if u.start == s else others).append(u.margin)
        same_use_clean += [u.margin for u in c.uses if u.start == s]
    out["margin"] = {"at_bug": float(np.mean(at_bug)) if at_bug else math.nan,
                     "same_use_clean_twin": float(np.mean(same_use_clean)) if same_use_clean else math.nan,
                     "other_uses_buggy_twin": float(np.mean(others)) if others else math.nan,
                     "bug_uses_scored": len(at_bug)}
    return out


# --- the evaluation behind `tessera eval code-misuse` ------------------------------------
TASKS = ("variable_misuse", "variable_misuse_repair")


def examples(benchmark: Path, task: str, split: str, tok, max_length: int, max_examples: int | None,
             seed: int = 0) -> tuple[list[dict], int]:
    """The split's examples that fine-tuning keeps (sampled first, as CodeTaskDataModule does), and
    how many were dropped because their edit site lies beyond ``max_length``."""
    rows = read_split(benchmark, task, split, max_examples, seed)
    kept = [r for r in rows if featurise(r, task, tok, max_length) is not None]
    return kept, len(rows) - len(kept)


def paired(benchmark: Path, scorer: MisuseScorer, tok, max_length: int, max_pairs: int, progress: bool) -> dict:
    """``site_effect`` on the test split of a ``--paired`` benchmark's variable_misuse_repair task:
    the first ``max_pairs`` pairs whose bug lies inside ``max_length`` tokens."""
    twins: dict[tuple, dict] = {}
    for r in read_split(benchmark, "variable_misuse_repair", "test"):
        twins.setdefault((r["path"], r["function"], r["line"], r["site"][0]), {})[r["label"]] = r
    pairs = [(t[0], t[1]) for t in twins.values() if set(t) == {0, 1}
             and featurise(t[1], "variable_misuse_repair", tok, max_length) is not None][:max_pairs]
    if not pairs:
        raise ValueError(f"{benchmark} holds no clean / buggy pairs of variable_misuse_repair; was it written with --paired?")
    clean = scorer.score([c["source"] for c, _ in pairs], progress=progress)
    buggy = scorer.score([b["source"] for _, b in pairs], progress=progress)
    return site_effect(clean, buggy, [b["error_span"][0] for _, b in pairs])


def run(benchmark: Path, tokenizer: Path | None, mlm: str | Path, out: Path, tasks=TASKS,
        max_length: int = 256, max_examples: int | None = None, batch_size: int = 64, precision: str = "bf16",
        progress: bool = True, paired_benchmark: Path | None = None, max_pairs: int = 400) -> dict:
    """The detector on ``tasks`` of ``benchmark`` with the masked-LM run ``mlm`` (tokenizer: the run's
    own unless given); writes OUT/results.json and OUT/margins.png and returns the results."""
    from modalities.code import load_code_tokenizer

    system, own_tok = load_mlm(mlm)
    tokenizer = tokenizer or own_tok
    if tokenizer is None or not Path(tokenizer).exists():
        raise FileNotFoundError(f"no code tokenizer for {mlm} ({tokenizer}); give --tokenizer")
    tok = load_code_tokenizer(tokenizer)
    scorer = MisuseScorer.from_system(system, tok, max_length=max_length, batch_size=batch_size, precision=precision)
    results = {"settings": {"benchmark": str(benchmark), "tokenizer": str(tokenizer), "mlm": str(mlm),
                            "max_length": max_length, "max_examples": max_examples,
                            "precision": precision, "threads": torch.get_num_threads()},
               "tasks": {}, "margins": {}}
    for task in tasks:
        by_stat = {k: {} for k in STATISTICS}
        thresholds, values = {}, {}
        for split in ("valid", "test"):  # valid first: it chooses the thresholds and the statistic
            exs, dropped = examples(benchmark, task, split, tok, max_length, max_examples)
            labels = [e["label"] for e in exs]
            t0 = time.perf_counter()
            scores = scorer.score([e["source"] for e in exs], progress=progress)
            seconds = time.perf_counter() - t0
            stats = {k: [s.statistic(k) for s in scores] for k in STATISTICS}
            for k in STATISTICS:
                if split == "valid":
                    thresholds[k] = best_threshold(stats[k], labels)
                by_stat[k][split] = {**misuse_metrics(scores, exs, thresholds[k], k), "dropped_site_cut_off": dropped,
                                     "seconds": round(seconds, 1),
                                     "majority": float(max(np.mean(labels), 1 - np.mean(labels)))}
            values[split] = {k: {"clean": [x for x, y in zip(v, labels, strict=True) if not y],
                                 "buggy": [x for x, y in zip(v, labels, strict=True) if y]}
                             for k, v in stats.items()}
        chosen = max(STATISTICS, key=lambda k: (by_stat[k]["valid"]["accuracy"], by_stat[k]["valid"]["auroc"]))
        results["tasks"][task] = {"statistic": chosen, **by_stat[chosen], "by_statistic": by_stat}
        results["margins"][task] = values["test"][chosen]
    if paired_benchmark is not None:
        results["paired"] = paired(paired_benchmark, scorer, tok, max_length, max_pairs, progress)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "margins.png")
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    return results


def _json_safe(x):
    """Infinite margins (functions with no scorable use) and NaNs as null: strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return x


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        m = results["margins"][task]
        finite = [v for k in ("clean", "buggy") for v in m[k] if math.isfinite(v)]
        bins = np.linspace(min(finite, default=-1), max(finite, default=1), 40)
        for k, colour in (("clean", "tab:blue"), ("buggy", "tab:red")):
            ax.hist([v for v in m[k] if math.isfinite(v)], bins=bins, alpha=0.55, color=colour, label=k)
        test = results["tasks"][task]["test"]
        if math.isfinite(test["threshold"]):
            ax.axvline(test["threshold"], color="k", ls="--", label=f"threshold (valid) {test['threshold']:.2f}")
        ax.set_title(f"{task}: test accuracy {test['accuracy']:.3f}, AUROC {test['auroc']:.3f}", fontsize=9)
        ax.set_xlabel({"min_margin": "minus the lowest margin over the function's variable uses (nats / subword)",
                       "log_odds": "log posterior odds of a misuse"}[results["tasks"][task]["statistic"]])
        ax.set_ylabel("functions")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(results: dict) -> None:
    print("| task | statistic | split | examples | accuracy | AUROC | localisation | repair | joint | majority |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for task, row in results["tasks"].items():
        for stat, splits in row["by_statistic"].items():
            for split, r in splits.items():
                extra = " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in ("localization", "repair", "joint"))
                mark = " (chosen)" if stat == row["statistic"] else ""
                print(f"| {task} | {stat}{mark} | {split} | {r['examples']} | {r['accuracy']:.3f} | {r['auroc']:.3f} | "
                      f"{extra} | {r['majority']:.3f} |")
