"""Findings <-> impression retrieval on the OpenI reports, under report-style variants.

For every test report with both sections: the findings (in a style: original, abbreviated,
negations reworded, both) are the query and the impressions the gallery (f2i), and the
reverse (i2f: the impression alone as the query, styled the same way). Galleries are
deduplicated by normalised text (hundreds of reports share "No acute cardiopulmonary
abnormality"), so a hit on any report with the same impression counts. A TF-IDF baseline
(words, idf from the training split) is always reported next to the towers.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from modalities.cxr import STYLES, Report, split_of
from modalities.text import load_tokenizer

from .data.cxr import text_key
from .metrics.retrieval import dedup_gallery, retrieval_recall

KS = (1, 5, 10)


def tokenize(tokenizer, texts: list[str], max_length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> right-padded ``ids`` (B, T) and ``mask`` (B, T) bool; pads are [PAD] (0 without one)."""
    tokenizer.enable_truncation(max_length)
    pad = tokenizer.token_to_id("[PAD]") or 0
    enc = tokenizer.encode_batch(texts)
    T = max(len(e.ids) for e in enc)
    ids = torch.full((len(enc), T), pad, dtype=torch.long)
    mask = torch.zeros((len(enc), T), dtype=torch.bool)
    for r, e in enumerate(enc):
        ids[r, : len(e.ids)] = torch.tensor(e.ids)
        mask[r, : len(e.ids)] = True
    return ids, mask


@torch.no_grad()
def embed_texts(tower: nn.Module, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 64) -> torch.Tensor:
    """Texts -> pooled embeddings (N, D) with the tower's ``encode``; sorted by length for speed."""
    tower.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        z = tower.encode(*tokenize(tokenizer, [texts[i] for i in idx], max_length)).float()
        for r, i in enumerate(idx):
            out[i] = z[r]
    return torch.stack(out)


class TfIdf:
    """Word TF-IDF (sublinear tf, idf from the fitting texts), cosine similarity: the lexical baseline."""

    def __init__(self, texts: list[str]):
        docs = [set(self.words(t)) for t in texts]
        df = Counter(w for d in docs for w in d)
        self.vocab = {w: i for i, w in enumerate(sorted(df))}
        self.idf = torch.tensor([math.log((1 + len(docs)) / (1 + df[w])) + 1 for w in sorted(df)])

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9/]+", text.lower())

    def encode(self, texts: list[str]) -> torch.Tensor:
        x = torch.zeros(len(texts), len(self.vocab))
        for r, t in enumerate(texts):
            for w, c in Counter(self.words(t)).items():
                if w in self.vocab:
                    x[r, self.vocab[w]] = 1 + math.log(c)
        return x * self.idf


def test_pairs(reports: list[Report], split: str = "test") -> list[Report]:
    return [r for r in reports if split_of(r.uid) == split and r.findings and r.impression]


def retrieval_table(encoders: dict[str, callable], pairs: list[Report], styles: dict = STYLES) -> dict:
    """encoders: name -> function(list of texts) -> (N, D). Returns {name: {style: {f2i, i2f}}}."""
    findings = [r.findings for r in pairs]
    impressions = [r.impression for r in pairs]
    table: dict = {}
    reps_i, target_i = dedup_gallery(impressions, text_key)  # gallery: original impressions
    reps_f, target_f = dedup_gallery(findings, text_key)  # gallery: original findings
    for name, encode in encoders.items():
        table[name] = {}
        zi, zf_g = encode([impressions[i] for i in reps_i]), encode([findings[i] for i in reps_f])  # every style's
        for style, fn in styles.items():
            zf, zi_q = encode([fn(t) for t in findings]), encode([fn(t) for t in impressions])  # styled queries
            table[name][style] = {
                "f2i": retrieval_recall(zf, zi, target_i, KS),
                "i2f": retrieval_recall(zi_q, zf_g, target_f, KS),
            }
    return table


def tower_encoder(tower: nn.Module, tokenizer, max_length: int = 128):
    return lambda texts: embed_texts(tower, tokenizer, texts, max_length)


def folder_encoder(folder: str | Path, tokenizer: str | Path | None = None, max_length: int = 128):
    """A saved text tower folder (Tessera / LLM2Vec, with its tokenizer.json or ``tokenizer``)
    -> function(list of texts) -> (N, D) embeddings."""
    from modalities.cxr.towers import load_text_tower

    return tower_encoder(load_text_tower(folder), tokenizer_of(folder, tokenizer), max_length)


def tfidf_encoder(reports: list[Report]):
    model = TfIdf([r.text for r in reports if split_of(r.uid) == "train"])
    return model.encode


def tokenizer_of(folder: str | Path, fallback: str | Path | None = None):
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    if fallback is None:
        raise FileNotFoundError(f"{folder} has no tokenizer.json; give --tokenizer")
    return load_tokenizer(fallback)


def head_to_head(per_seed: dict, a: str, b: str, metrics=("recall@1", "recall@10")) -> dict:
    """Count, over every seed and style, the cases where tower ``a`` retrieves better than ``b``.

    ``per_seed``: {seed: retrieval_table(...)}. Returns {direction: {metric: {"wins", "losses",
    "ties", "cases"}}}, plus the same restricted to the restyled queries under "styled" (every
    style but "original"), so that a claim like "ahead in 15 of 15 styled cases" can be read off."""
    for seed, table in per_seed.items():
        if a not in table or b not in table:
            raise KeyError(f"head_to_head: seed {seed}'s table lacks {a!r} or {b!r}")
    out: dict = {}
    for key, keep in (("all", lambda s: True), ("styled", lambda s: s != "original")):
        out[key] = {}
        for direction in ("f2i", "i2f"):
            out[key][direction] = {}
            for metric in metrics:
                wins = losses = ties = 0
                for table in per_seed.values():
                    for style in filter(keep, table[a]):
                        x, y = table[a][style][direction][metric], table[b][style][direction][metric]
                        wins, losses, ties = wins + (x > y), losses + (x < y), ties + (x == y)
                out[key][direction][metric] = {"wins": wins, "losses": losses, "ties": ties,
                                               "cases": wins + losses + ties}
    return out


def write_report(table: dict, out: Path, meta: dict) -> dict:
    """retrieval.json and retrieval.png (Recall@1 and @10 per style, both directions)."""
    out.mkdir(parents=True, exist_ok=True)
    result = {**meta, "results": table}
    (out / "retrieval.json").write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    styles = list(next(iter(table.values())))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(names)
    for ax, direction in zip(axes, ("f2i", "i2f"), strict=True):
        for j, name in enumerate(names):
            xs = [i + j * width for i in range(len(styles))]
            ax.bar(xs, [table[name][s][direction]["recall@10"] for s in styles], width, alpha=0.35, color=f"C{j}")
            ax.bar(xs, [table[name][s][direction]["recall@1"] for s in styles], width, color=f"C{j}", label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(styles))], styles, rotation=15, fontsize=8)
        ax.set_title({"f2i": "findings -> impression", "i2f": "impression -> findings"}[direction])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Recall@1 (solid), Recall@10 (light)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: never over a bar
    fig.tight_layout()
    fig.savefig(out / "retrieval.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return result


def mesh_probe(encoders: dict[str, callable], reports: list[Report], top: int = 10, steps: int = 300,
               seed: int = 0) -> dict:
    """MeSH-label classification from report text: a linear probe (logistic regression, Adam,
    weight decay) on frozen embeddings of the training split, macro AUROC on the test split, for
    the ``top`` most frequent MeSH major headings of the training split (qualifiers dropped)."""
    from torchmetrics.functional.classification import multilabel_auroc

    train = [r for r in reports if split_of(r.uid) == "train"]
    test = [r for r in reports if split_of(r.uid) == "test"]
    counts = Counter(label for r in train for label in r.labels)
    names = [n for n, _ in counts.most_common(top)]

    def targets(rs):
        return torch.tensor([[n in r.labels for n in names] for r in rs], dtype=torch.float32)

    y_train, y_test = targets(train), targets(test)
    out = {"labels": names, "train": len(train), "test": len(test), "towers": {}}
    for name, encode in encoders.items():
        x_train, x_test = encode([r.text for r in train]).float(), encode([r.text for r in test]).float()
        mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
        x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
        torch.manual_seed(seed)
        probe = nn.Linear(x_train.shape[1], len(names))
        opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(probe(x_train), y_train).backward()
            opt.step()
        with torch.no_grad():
            per = multilabel_auroc(probe(x_test), y_test.long(), num_labels=len(names), average=None)
        out["towers"][name] = {"macro_auroc": round(per.mean().item(), 4),
                               "per_label": {n: round(v.item(), 4) for n, v in zip(names, per, strict=True)}}
    return out


PROMPTS = {  # one report-style sentence per finding the synthetic images can show
    "cardiomegaly": "Cardiomegaly.",
    "effusion": "Pleural effusion.",
    "pneumothorax": "Pneumothorax.",
    "nodule": "Pulmonary nodule.",
    "opacity": "Airspace opacity.",
}


@torch.no_grad()
def clip_synthetic_eval(dual: nn.Module, tokenizer, reports: list[Report], image_size: int = 64,
                        split: str = "test", batch_size: int = 64) -> dict:
    """Dual tower on SYNTHETIC images of the ``split`` reports: zero-shot AUROC per finding
    (cosine of the image with a one-sentence prompt; the normal prompt "No acute cardiopulmonary
    abnormality." is subtracted), and image -> report Recall@K where a report counts when its
    positive findings equal the image's (the images show nothing else)."""
    from torchmetrics.functional.classification import binary_auroc

    from modalities.cxr.images import CXRTransform
    from modalities.cxr.synthetic import FINDINGS, finding_labels, synth_radiograph

    from .metrics.retrieval import retrieval_recall_any

    dual.eval()
    rs = [r for r in reports if split_of(r.uid) == split]
    texts = [r.findings or r.impression for r in rs]
    labels = torch.tensor([[finding_labels(t)[f] for f in FINDINGS] for t in texts])  # (N, 5)
    tf = CXRTransform(image_size)
    zi = torch.cat([dual.encode_image(torch.stack([tf(synth_radiograph(r.uid, t, image_size))
                                                   for r, t in zip(rs[s : s + batch_size], texts[s : s + batch_size], strict=True)]))
                    for s in range(0, len(rs), batch_size)])

    def text_emb(ts):
        return torch.cat([dual.encode_text(*tokenize(tokenizer, ts[s : s + batch_size]))
                          for s in range(0, len(ts), batch_size)])

    zt = text_emb(texts)
    prompts = text_emb([PROMPTS[f] for f in FINDINGS] + ["No acute cardiopulmonary abnormality."])
    scores = zi @ prompts[:-1].T - (zi @ prompts[-1:].T)  # (N, 5)
    auroc = {}
    for j, f in enumerate(FINDINGS):
        if 0 < int(labels[:, j].sum()) < len(rs):
            auroc[f] = round(binary_auroc(scores[:, j], labels[:, j].long()).item(), 4)
    same = (labels[:, None, :] == labels[None, :, :]).all(-1)  # (N, N) same findings
    return {"split": split, "images": len(rs), "images_are": "SYNTHETIC (drawn from the reports' findings)",
            "positives": {f: int(labels[:, j].sum()) for j, f in enumerate(FINDINGS)},
            "zero_shot_auroc": auroc,
            "zero_shot_macro_auroc": round(sum(auroc.values()) / max(len(auroc), 1), 4),
            "i2t_same_findings": retrieval_recall_any(zi, zt, same, KS),
            "t2i_same_findings": retrieval_recall_any(zt, zi, same, KS)}
