"""The metrics MARBLE reports for its music tasks, on plain tensors (no torchmetrics, no mir_eval).

    accuracy(logits, y)                     multiclass (NSynth, GTZAN, GiantSteps clips)
    key_weighted_score(pred, ref)           MIREX key score over MARBLE's 24 key classes (GiantSteps)
    roc_auc_macro(scores, y) / pr_auc_macro multilabel, macro over tags (MagnaTagATune)
    r2(pred, y)                             regression, per output and their mean (Emomusic)

Definitions followed:
- MIREX key score: ``mir_eval/key.py`` ``weighted_score`` (craffel/mir_eval): 1.0 same key, 0.5 the
  estimate a perfect fifth above in the same mode, 0.3 relative major/minor, 0.2 parallel, else 0.
  MARBLE computes it with mir_eval in ``benchmark/tasks/GS/utils.py`` (a43992899/MARBLE-Benchmark).
- ROC-AUC / PR-AUC: torchmetrics ``AUROC`` / ``AveragePrecision`` with ``task="multilabel"``, macro
  average, as MARBLE's ``benchmark/models/probers.py`` builds them; AP is the step-wise sum
  ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds (sklearn's and torchmetrics' definition).
  Tags with no positive or no negative clip in the split have no AUC; they are left out of the
  macro mean and counted (``tags_scored``).
- R^2: torchmetrics ``R2Score(num_outputs=2, multioutput="uniform_average")`` as in MARBLE's
  ``benchmark/tasks/EMO/EMO_prober.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# MARBLE's GiantSteps classes, in its order (benchmark/tasks/GS/GS_dataset.py): tonic + 12 * minor
KEY_CLASSES = tuple(f"{t} {m}" for m in ("major", "minor")
                    for t in ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"))


def accuracy(logits: Tensor, y: Tensor) -> float:
    """logits (N, C), y (N,) -> share of argmax hits."""
    return float((logits.argmax(1) == y).float().mean())


def key_score(ref: int, est: int) -> float:
    """MIREX weighted score of one estimate; classes index ``KEY_CLASSES`` (tonic + 12 * minor)."""
    rt, rm, et, em = ref % 12, ref // 12, est % 12, est // 12
    if (rt, rm) == (et, em):
        return 1.0
    if rm == em and (et - rt) % 12 == 7:  # a perfect fifth above, same mode
        return 0.5
    if rm == 0 and em == 1 and (et - rt) % 12 == 9:  # relative minor of a major reference
        return 0.3
    if rm == 1 and em == 0 and (et - rt) % 12 == 3:  # relative major of a minor reference
        return 0.3
    if rm != em and rt == et:  # parallel
        return 0.2
    return 0.0


def key_weighted_score(pred: Tensor, ref: Tensor) -> float:
    """Mean MIREX weighted score of predicted vs reference key classes, both (N,) long."""
    return sum(key_score(int(r), int(p)) for p, r in zip(pred.tolist(), ref.tolist(), strict=True)) / max(len(ref), 1)


def _auc_one(s: Tensor, y: Tensor) -> float:
    """ROC-AUC of scores ``s`` for binary labels ``y`` (Mann-Whitney, tied scores share their mean rank)."""
    order = torch.argsort(s)
    sorted_s = s[order]
    ranks = torch.empty_like(s, dtype=torch.float64)
    i, n = 0, len(s)
    while i < n:  # average ranks over runs of equal scores
        j = i
        while j + 1 < n and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ap_one(s: Tensor, y: Tensor) -> float:
    """Average precision: sum over distinct thresholds (high to low) of (recall step) x precision."""
    order = torch.argsort(s, descending=True, stable=True)
    s, y = s[order].double(), y[order].double()
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    last = torch.ones_like(s, dtype=torch.bool)  # the last position of each run of equal scores
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / tp[-1]
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((steps * precision).sum())


def _per_tag(fn, scores: Tensor, y: Tensor) -> tuple[float, int]:
    """Macro mean of ``fn`` over tags that have both a positive and a negative clip; (mean, tags used)."""
    vals = []
    for k in range(y.shape[1]):
        col = y[:, k]
        if 0 < int(col.sum()) < len(col):
            vals.append(fn(scores[:, k], col))
    return (sum(vals) / len(vals) if vals else float("nan")), len(vals)


def roc_auc_macro(scores: Tensor, y: Tensor) -> tuple[float, int]:
    """scores (N, K) (logits or probabilities), y (N, K) in {0, 1} -> (macro ROC-AUC, tags scored)."""
    return _per_tag(_auc_one, scores.double(), y)


def pr_auc_macro(scores: Tensor, y: Tensor) -> tuple[float, int]:
    """scores (N, K), y (N, K) in {0, 1} -> (macro average precision, tags scored)."""
    return _per_tag(_ap_one, scores.double(), y)


def r2(pred: Tensor, y: Tensor) -> list[float]:
    """pred, y (N, K) -> R^2 of each output: 1 - SS_res / SS_tot."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return (1 - ss_res / ss_tot).tolist()


def task_metrics(kind: str, outputs: Tensor, y: Tensor, groups: list[str] | None = None, keys: bool = False,
                 names: list[str] | None = None) -> dict[str, float]:
    """Every metric MARBLE logs for a task kind, from probe outputs (logits / predictions) (N, C).

    multiclass: accuracy (+ with ``keys``: the MIREX score per clip; with ``groups``: song-level
    accuracy / score from the mean of each song's clip probabilities); multilabel: ROC-AUC and PR-AUC
    (macro) and how many tags could be scored; regression: R^2 per output (``names``) and their mean.
    """
    if kind == "multiclass":
        r = {"accuracy": accuracy(outputs, y)}
        if keys:
            r["key_score"] = key_weighted_score(outputs.argmax(1), y)
        if groups is not None:
            probs = outputs.softmax(1)
            songs = sorted(set(groups))
            index = {g: i for i, g in enumerate(songs)}
            gi = torch.tensor([index[g] for g in groups])
            mean = torch.zeros(len(songs), probs.shape[1]).index_add_(0, gi, probs)  # summed probabilities per song
            song_y = torch.zeros(len(songs), dtype=torch.long).index_copy_(0, gi, y)
            r["accuracy_song"] = accuracy(mean, song_y)
            if keys:
                r["key_score_song"] = key_weighted_score(mean.argmax(1), song_y)
        return r
    if kind == "multilabel":
        auc, n = roc_auc_macro(outputs, y)
        ap, _ = pr_auc_macro(outputs, y)
        return {"roc_auc": auc, "pr_auc": ap, "tags_scored": n}
    if kind == "regression":
        per = r2(outputs, y)
        r = {"r2": sum(per) / len(per)}
        r.update({f"r2_{n}": v for n, v in zip(names or [str(i) for i in range(len(per))], per, strict=True)})
        return r
    raise ValueError(f"unknown task kind {kind!r}; choose multiclass, multilabel or regression")
