"""Threshold-free scores of a detector (bug / no bug)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random buggy function scores above a random clean one (ties count half);
    NaN without both classes. torchmetrics' ``binary_auroc``, in float64 so that its sigmoid of
    scores outside [0, 1] does not saturate into ties."""
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if y.numel() == 0 or bool((y == y[0]).all()):
        return math.nan
    return float(binary_auroc(torch.as_tensor(np.asarray(scores, dtype=np.float64)), y))
