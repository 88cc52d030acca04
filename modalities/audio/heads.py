"""MERT's pretraining heads: HuBERT-style codebook prediction and CQT reconstruction, as one loss module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbone.linear import Linear


class CodebookPrediction(nn.Module):
    """HuBERT's target prediction: project each frame to K vectors of ``final_dim`` and score every
    entry of codebook k by cosine similarity / ``logit_temp`` against learned label embeddings.

    hidden (M, D) -> logits (M, K, V).
    """

    def __init__(self, hidden_size: int, num_codebooks: int, codebook_size: int, final_dim: int, logit_temp: float):
        super().__init__()
        self.K, self.V, self.logit_temp = num_codebooks, codebook_size, logit_temp
        self.final_proj = Linear(hidden_size, num_codebooks * final_dim)
        # fairseq's label_embs_concat: one (V, final_dim) table per codebook, stacked
        self.label_embs = nn.Parameter(torch.empty(num_codebooks, codebook_size, final_dim).uniform_())

    def forward(self, hidden: Tensor) -> Tensor:
        proj = self.final_proj(hidden).unflatten(-1, (self.K, -1))  # (M, K, F)
        proj = F.normalize(proj.float(), dim=-1)
        labels = F.normalize(self.label_embs.float(), dim=-1)  # (K, V, F)
        return torch.einsum("mkf,kvf->mkv", proj, labels) / self.logit_temp  # (M, K, V)


class MERTHeads(nn.Module):
    """Losses on the masked frames: CE over each codebook (mean over K) and MSE of the CQT.

    forward(hidden (M, D), codes (M, K) long | None, cqt (M, bins) | None) -> named dict.
    """

    def __init__(
        self,
        hidden_size: int,
        num_codebooks: int = 8,
        codebook_size: int = 1024,
        final_dim: int = 64,
        logit_temp: float = 0.1,
        cqt_bins: int = 336,
        rvq_weight: float = 1.0,
        cqt_weight: float = 1.0,
    ):
        super().__init__()
        self.codebooks = CodebookPrediction(hidden_size, num_codebooks, codebook_size, final_dim, logit_temp)
        self.cqt_head = Linear(hidden_size, cqt_bins)
        self.rvq_weight, self.cqt_weight = rvq_weight, cqt_weight
        # per-bin statistics that standardise the CQT targets (set once from data: set_cqt_stats)
        self.register_buffer("cqt_mean", torch.zeros(cqt_bins))
        self.register_buffer("cqt_std", torch.ones(cqt_bins))
        self.register_buffer("cqt_stats_set", torch.tensor(False))

    @torch.no_grad()
    def set_cqt_stats(self, cqt: Tensor) -> None:
        """(N, bins) target frames -> per-bin mean and std used to standardise every target."""
        self.cqt_mean.copy_(cqt.float().mean(0))
        self.cqt_std.copy_(cqt.float().std(0).clamp(min=1e-3))
        self.cqt_stats_set.fill_(True)

    def forward(self, hidden: Tensor, codes: Tensor | None, cqt: Tensor | None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        loss = hidden.new_zeros((), dtype=torch.float32)
        if codes is not None and self.rvq_weight > 0:
            logits = self.codebooks(hidden)  # (M, K, V)
            out["rvq_ce"] = F.cross_entropy(logits.flatten(0, 1), codes.flatten())
            out["rvq_acc"] = (logits.argmax(-1) == codes).float().mean()
            loss = loss + self.rvq_weight * out["rvq_ce"]
        if cqt is not None and self.cqt_weight > 0:
            target = (cqt.float() - self.cqt_mean) / self.cqt_std
            out["cqt_mse"] = F.mse_loss(self.cqt_head(hidden).float(), target)
            loss = loss + self.cqt_weight * out["cqt_mse"]
        out["loss"] = loss
        return out
