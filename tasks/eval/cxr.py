"""CXR evaluations: ``tessera eval cxr-retrieval | cxr-clip | cxr-towers``.

    tessera eval cxr-retrieval runs/cxr/bert-supervised-tiny/lightning_logs/version_0/encoder --out runs/cxr/retrieval
    tessera eval cxr-clip runs/cxr/clip-tiny/lightning_logs/version_0/encoder
    tessera eval cxr-towers --seeds 0 --out runs/cxr/compare

Findings <-> impression retrieval on the OpenI reports, under report-style variants. For every test report with both sections: the findings (in a style: original, abbreviated,
negations reworded, both) are the query and the impressions the gallery (f2i), and the
reverse (i2f: the impression alone as the query, styled the same way). Galleries are
deduplicated by normalised text (hundreds of reports share "No acute cardiopulmonary
abnormality"), so a hit on any report with the same impression counts. A TF-IDF baseline
(words, idf from the training split) is always reported next to the towers.

The dual tower's evaluation (``clip_synthetic_eval``) draws SYNTHETIC images from the held-out
reports' findings (``modalities.cxr.synthetic``): zero-shot AUROC per finding from prompts, and
image <-> report Recall@K where a report counts when its findings match the image's. The tower
sweep (``cxr-towers``) trains through ``tasks.cxr_pipeline`` and scores here.
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

from ..data.cxr import text_key
from ..jobs import UserError, job
from ..metrics.retrieval import dedup_gallery, retrieval_recall

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


def read_tokenizer(path: str | Path, what: str = "--tokenizer"):
    """``load_tokenizer`` with its failures as one error naming the file (the tokenizers library
    raises a bare Exception for a file that is not a tokenizer.json)."""
    try:
        return load_tokenizer(path)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # noqa: BLE001  (tokenizers' own errors are plain Exceptions)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{what} {path} is not a readable tokenizer.json ({msg})") from None


def tokenizer_of(folder: str | Path, fallback: str | Path | None = None):
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return read_tokenizer(folder, "the tokenizer of")
    if fallback is None:
        raise FileNotFoundError(f"{folder} has no tokenizer.json; give --tokenizer")
    return read_tokenizer(fallback)


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

    from ..metrics.retrieval import retrieval_recall_any

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


# --- the jobs ---------------------------------------------------------------------------
def print_table(table: dict) -> None:
    styles = list(next(iter(table.values())))
    w = max(14, max(len(n) for n in table) + 2)
    print(f"{'tower':<{w}}{'style':<26}{'f2i R@1':>8}{'R@5':>7}{'R@10':>7}{'i2f R@1':>9}{'R@5':>7}{'R@10':>7}")
    for name, rows in table.items():
        for s in styles:
            f, i = rows[s]["f2i"], rows[s]["i2f"]
            print(f"{name:<{w}}{s:<26}{f['recall@1']:>8.3f}{f['recall@5']:>7.3f}{f['recall@10']:>7.3f}"
                  f"{i['recall@1']:>9.3f}{i['recall@5']:>7.3f}{i['recall@10']:>7.3f}")


def run_name(folder: Path) -> str:
    """A short name for an encoder folder: the run's own folder name
    (``runs/cxr/bert-supervised-tiny/lightning_logs/version_0/encoder`` -> ``bert-supervised-tiny``)."""
    parts = [p for p in folder.resolve().parts if p not in ("encoder", "lightning_logs") and not p.startswith("version_")]
    return parts[-1] if parts else str(folder)


def text_encoder_folder(spec: str) -> tuple[str, Path]:
    """``[NAME=]FOLDER`` -> (name, folder), checked to be a text encoder folder before anything loads."""
    from ..embed import guess_modality, open_encoder_folder

    name, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
    folder, raw = open_encoder_folder(path)
    modality = guess_modality(folder, raw)
    if modality != "text":
        raise UserError(f"{folder} is a {modality} encoder folder; cxr-retrieval takes text towers (the encoder/ "
                        "folder of a configs/cxr/ text run, or an imported text encoder)")
    return name or run_name(folder), folder


def _reports_for(source: str | None):
    from ..data.cxr import load_reports

    if source is not None and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"--reports {source} does not exist; give NLMCXR_reports.tgz or a folder of OpenI "
                                "*.xml (default: the cached OpenI, copied on first use)")
    return load_reports(Path(source).expanduser() if source else None)


def _out_folder(out: str) -> Path:
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file; give a folder for the JSON and the plot")
    return path


@job("eval", "cxr-retrieval", help="findings <-> impression retrieval of text towers next to TF-IDF (JSON + plot)",
     example="tessera eval cxr-retrieval runs/cxr/bert-supervised-tiny/lightning_logs/version_0/encoder "
             "--out runs/cxr/retrieval")
def eval_retrieval(args) -> int:
    """Findings <-> impression retrieval on the held-out OpenI reports, styled four ways
    (original, abbreviated, negations reworded, both), for any number of text-tower encoder
    folders next to TF-IDF. Writes retrieval.json and retrieval.png (and mesh.json with --mesh)."""
    import time

    out = _out_folder(args.out)
    towers = [text_encoder_folder(spec) for spec in args.encoders]  # every folder checked before any work
    names = [n for n, _ in towers]
    if len(set(names)) != len(names):
        raise UserError(f"two encoders share a name ({', '.join(names)}); name them: NAME=FOLDER")
    if args.tokenizer and not Path(args.tokenizer).expanduser().exists():
        raise FileNotFoundError(f"--tokenizer {args.tokenizer} does not exist; give a tokenizer.json")
    for _, folder in towers:
        if not args.tokenizer and not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.json; give --tokenizer (the tokenizer it was trained with)")
    reports, read = _reports_for(args.reports)
    pairs = test_pairs(reports, args.split)
    if not pairs:
        raise UserError(f"no {args.split} report of {read['source']} has both findings and an impression")
    encoders = {"tfidf": tfidf_encoder(reports)}
    for name, folder in towers:
        encoders[name] = folder_encoder(folder, args.tokenizer, args.max_length)
    t0 = time.time()
    table = retrieval_table(encoders, pairs)
    result = write_report(table, out, {"data": read, "split": args.split, "pairs": len(pairs),
                                       "towers": {n: str(f) for n, f in towers}, "seconds": round(time.time() - t0, 1)})
    print_table(table)
    print(f"wrote {out / 'retrieval.json'} and retrieval.png")
    if args.mesh:
        mesh = mesh_probe(encoders, reports)
        (out / "mesh.json").write_text(json.dumps(mesh, indent=1))
        print(f"MeSH linear probe, macro AUROC over {len(mesh['labels'])} labels ({mesh['test']} test reports):")
        for name, r in mesh["towers"].items():
            print(f"  {name:<24}{r['macro_auroc']:.3f}")
        result["mesh"] = mesh
    return 0


@eval_retrieval.arguments
def _(p) -> None:
    p.add_argument("encoders", nargs="*", metavar="[NAME=]FOLDER",
                   help="text-tower encoder folders (config.json + model.safetensors + tokenizer.json); none: TF-IDF only")
    p.add_argument("--tokenizer", help="tokenizer.json for folders that carry none")
    p.add_argument("--reports", help="NLMCXR_reports.tgz or a folder of OpenI XML (default: the cached OpenI)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--max-length", type=int, default=128, help="tokens per text")
    p.add_argument("--mesh", action="store_true",
                   help="also MeSH-label classification: linear probe on frozen embeddings, macro AUROC (mesh.json)")
    p.add_argument("--out", default="runs/cxr/retrieval", help="folder for retrieval.json and retrieval.png")


def load_dual(path: str | Path, tokenizer: str | None = None) -> tuple[nn.Module, object, dict]:
    """(dual tower, tokenizer, info) from an exported encoder folder (holding ``dual_tower/``)
    or a CLIPSystem run (run folder, its log folder or a checkpoint; ``tasks.runs.load_system``)."""
    from modalities.cxr.dual import DUAL_DIR, load_dual_tower

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; give the encoder/ folder of a clip run "
                                "(configs/cxr/clip_tiny.yaml) or its run folder")
    if p.is_dir() and (p / "config.json").is_file():  # an encoder folder
        if not (p / DUAL_DIR).is_dir():
            raise UserError(f"{p} is an encoder folder without {DUAL_DIR}/: not a dual tower; give the encoder/ "
                            "folder of a clip run (configs/cxr/clip_tiny.yaml)")
        dual, tok_dir = load_dual_tower(p), p
        pre = p / DUAL_DIR / "preprocess.json"
        info = {"source": str(p), **(json.loads(pre.read_text()) if pre.is_file() else {})}
    else:
        from ..cxr import CLIPSystem
        from ..runs import load_system, log_dir_of

        system, _, raw = load_system(p)
        if not isinstance(system, CLIPSystem):
            raise UserError(f"{p} is a run of {type(system).__name__}, not CLIPSystem; cxr-clip evaluates dual towers "
                            "(for text towers: tessera eval cxr-retrieval)")
        dual, tok_dir = system.model, log_dir_of(p) / "encoder"
        data = (raw.get("data") or {}).get("init_args") or {}
        info = {"source": str(p), "image_size": data.get("image_size", 64),
                "images": "real files" if data.get("image_root") else "SYNTHETIC (drawn from findings)"}
    if tokenizer is not None:
        tok = read_tokenizer(Path(tokenizer).expanduser())
    elif (tok_dir / "tokenizer.json").is_file():
        tok = read_tokenizer(tok_dir, "the tokenizer of")
    else:
        raise FileNotFoundError(f"no tokenizer.json in {tok_dir}; give --tokenizer (the run's report WordPiece)")
    return dual.eval(), tok, info


@job("eval", "cxr-clip", help="a trained dual tower on SYNTHETIC images: zero-shot AUROC, image <-> report Recall@K",
     example="tessera eval cxr-clip runs/cxr/clip-tiny/lightning_logs/version_0/encoder")
def eval_clip(args) -> int:
    """A trained dual tower (tessera fit --config configs/cxr/clip_tiny.yaml) on SYNTHETIC images
    drawn from the held-out OpenI reports' findings: zero-shot AUROC per finding from one-sentence
    prompts, and image <-> report Recall@K where a report counts when its findings match the
    image's. Takes the run's encoder/ folder (text tower + dual_tower/) or the run folder.
    Writes clip_eval.json; nothing in it says how a model does on real radiographs."""
    dual, tok, info = load_dual(args.run, args.tokenizer)
    out = _out_folder(args.out) if args.out else (Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent)
    reports, read = _reports_for(args.reports)
    size = args.image_size or int(info.get("image_size") or 64)
    result = clip_synthetic_eval(dual, tok, reports, size, split=args.split)
    result.update(model=info, data=read, image_size=size)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clip_eval.json").write_text(json.dumps(result, indent=1))
    print(f"{result['images']} {result['images_are']} images, {size} px; zero-shot AUROC {result['zero_shot_auroc']}, "
          f"macro {result['zero_shot_macro_auroc']:.3f}")
    for d in ("i2t_same_findings", "t2i_same_findings"):
        r = result[d]
        print(f"{d}: R@1 {r['recall@1']:.3f} R@5 {r['recall@5']:.3f} R@10 {r['recall@10']:.3f}")
    print(f"wrote {out / 'clip_eval.json'}")
    return 0


@eval_clip.arguments
def _(p) -> None:
    p.add_argument("run", help="the encoder/ folder of a clip run (text tower + dual_tower/), or the run folder, "
                               "its lightning_logs/version_N or a .ckpt in it")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in the encoder folder)")
    p.add_argument("--reports", help="NLMCXR_reports.tgz or a folder of OpenI XML (default: the cached OpenI)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--image-size", type=int, help="image size (default: the one the run trained at)")
    p.add_argument("--out", help="folder for clip_eval.json (default: the folder given)")


@job("eval", "cxr-towers", help="LLM2Vec vs BERT text towers at equal compute, trained and scored (JSON + plot)",
     example="tessera eval cxr-towers --seeds 0 --out runs/cxr/compare")
def eval_towers(args) -> int:
    """LLM2Vec vs BERT text towers at equal compute on the real OpenI reports: a Llama-shaped
    decoder (causal LM, then LLM2Vec's bidirectional MNTP, SimCSE, supervised) against the shared
    backbone (MLM for as many steps, then the same steps), with ablations (no SimCSE), supervised-
    only towers from scratch, all-MiniLM-L6-v2 and TF-IDF; every stage through `tessera fit` and the
    configs in configs/cxr/. Writes compare.json, retrieval.json and retrieval.png (mean over seeds)."""
    from ..cxr_pipeline import compare_towers

    for name in ("clm_steps", "mntp_steps", "simcse_steps", "supervised_steps"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: give a number of steps >= 0")
    out = _out_folder(args.out)
    if args.reports is not None and not Path(args.reports).expanduser().exists():
        raise FileNotFoundError(f"--reports {args.reports} does not exist; give NLMCXR_reports.tgz or a folder of "
                                "OpenI *.xml (default: the cached OpenI, copied on first use)")
    compare_towers(out, args.clm_steps, args.mntp_steps, args.simcse_steps, args.supervised_steps, args.seeds,
                   scratch=not args.no_scratch, minilm=args.minilm, ablation=not args.no_ablation, reuse=args.reuse,
                   reports=Path(args.reports).expanduser() if args.reports else None, extra=tuple(args.fit_arg))
    return 0


@eval_towers.arguments
def _(p) -> None:
    p.add_argument("--clm-steps", type=int, default=500, help="causal-LM pretraining of the decoder")
    p.add_argument("--mntp-steps", type=int, default=500, help="LLM2Vec MNTP (the BERT tower's MLM gets clm + mntp)")
    p.add_argument("--simcse-steps", type=int, default=100)
    p.add_argument("--supervised-steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--no-scratch", action="store_true", help="skip the supervised-only rows")
    p.add_argument("--minilm", default="supervised", choices=("supervised", "zero-shot", "none"),
                   help="all-MiniLM-L6-v2 rows: zero-shot and fine-tuned, zero-shot only, or none")
    p.add_argument("--no-ablation", action="store_true", help="skip the pretrained-then-supervised rows (no SimCSE)")
    p.add_argument("--reuse", action="store_true", help="keep stages already finished under --out (resume)")
    p.add_argument("--reports", help="NLMCXR_reports.tgz or a folder of OpenI XML (default: the cached OpenI)")
    p.add_argument("--fit-arg", action="append", default=[], metavar="ARG",
                   help="an argument for every `tessera fit` of the sweep, e.g. --fit-arg=--data.init_args.batch_size=16")
    p.add_argument("--out", default="runs/cxr/compare")


from . import cxr_bench  # noqa: E402, F401  (registers cxr-zeroshot and cxr-image-retrieval: real image folders)
