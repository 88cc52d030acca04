"""CXR benchmarks on REAL image folders, as ``tessera eval`` jobs (registered by tasks/eval/cxr.py):

    tessera eval cxr-zeroshot RUN --chexpert ~/CheXpert-v1.0-small                 # AUROC on valid.csv
    tessera eval cxr-zeroshot RUN --chexpert ~/CheXpert-v1.0-small --five-by-200   # GLoRIA's 5x200 accuracy
    tessera eval cxr-zeroshot RUN --mimic ~/mimic-cxr-jpg --split test              # AUROC on MIMIC's test split
    tessera eval cxr-image-retrieval RUN --layout openi --images ~/NLMCXR_png
    tessera eval cxr-image-retrieval RUN --layout mimic --images ~/mimic-cxr-jpg --split test

RUN is a trained dual tower (a clip run's encoder/ folder or run folder; ``tasks.eval.cxr.load_dual``).
Zero-shot: each class is scored by the cosine of the image with its prompt(s) (several prompts:
the mean of their normalised embeddings); AUROC per observation uses that cosine minus the
cosine with a normal prompt, labels under the chosen uncertainty policy ("ignore": uncertain
images are left out of that observation's AUROC); 5x200 is the argmax over the 5 class prompts
(accuracy, per-class accuracy, confusion matrix). Image <-> report Recall@K: image -> report with
reports of the same text as one gallery entry; report -> image with every image of that text
relevant. Every unreadable image, missing file and bad CSV row is counted in the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..jobs import UserError, job

KS = (1, 5, 10)
NORMAL_PROMPT = "No acute cardiopulmonary abnormality."
PROMPTS = {  # one report-style sentence per observation (replace with --prompts FILE.json)
    "No Finding": [NORMAL_PROMPT], "Enlarged Cardiomediastinum": ["Enlarged cardiomediastinum."],
    "Cardiomegaly": ["Cardiomegaly.", "The heart is enlarged."], "Lung Opacity": ["Airspace opacity."],
    "Lung Lesion": ["Lung lesion.", "Pulmonary nodule."], "Edema": ["Pulmonary edema."],
    "Consolidation": ["Consolidation."], "Pneumonia": ["Pneumonia."],
    "Atelectasis": ["Atelectasis.", "Bibasilar atelectasis."], "Pneumothorax": ["Pneumothorax."],
    "Pleural Effusion": ["Pleural effusion."], "Pleural Other": ["Pleural thickening."],
    "Fracture": ["Rib fracture."], "Support Devices": ["Support devices in place."],
}


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], size: int):
        from modalities.cxr.images import CXRTransform

        self.paths, self.tf = paths, CXRTransform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        from modalities.cxr.images import read_image

        try:
            return self.tf(read_image(self.paths[i])), i
        except (ValueError, OSError, Image.DecompressionBombError) as e:
            return str(e).splitlines()[0][:300], i


def _as_list(items):
    return items


@torch.no_grad()
def embed_images(dual, paths: list[Path], size: int, batch_size: int = 32, workers: int = 0) -> tuple[torch.Tensor, list[int], list[str]]:
    """(embeddings (N_ok, E), indices of the images that decoded, the first errors of those that did not)."""
    loader = torch.utils.data.DataLoader(_Images(paths, size), batch_size=batch_size, num_workers=workers,
                                         collate_fn=_as_list)
    zs, ok, errors = [], [], []
    for items in loader:
        good = [(x, i) for x, i in items if isinstance(x, torch.Tensor)]
        errors += [x for x, _ in items if not isinstance(x, torch.Tensor)]
        if good:
            zs.append(dual.encode_image(torch.stack([x for x, _ in good])).float())
            ok += [i for _, i in good]
    if not ok:
        raise ValueError(f"none of the {len(paths)} images decoded; first: {errors[0] if errors else '-'}")
    return torch.cat(zs), ok, errors


@torch.no_grad()
def embed_prompts(dual, tokenizer, prompts: dict[str, list[str]], names: list[str]) -> torch.Tensor:
    """(len(names), E): each class the renormalised mean of its prompts' embeddings."""
    from .cxr import tokenize

    out = []
    for n in names:
        z = dual.encode_text(*tokenize(tokenizer, prompts[n])).float()
        out.append(torch.nn.functional.normalize(z.mean(0), dim=-1))
    return torch.stack(out)


def load_prompts(path: str | None, names: list[str]) -> dict[str, list[str]]:
    prompts = dict(PROMPTS)
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--prompts {p} does not exist; give a JSON object {{observation: [prompt, ...]}}")
        try:
            given = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--prompts {p} is not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(given, dict) or not all(isinstance(v, list) and v and all(isinstance(t, str) for t in v)
                                                  for v in given.values()):
            raise ValueError(f"--prompts {p} must be a JSON object {{observation: [prompt, ...]}}")
        prompts.update(given)
    missing = [n for n in names if n not in prompts]
    if missing:
        raise UserError(f"no prompt for {missing}; add them to --prompts")
    return prompts


def zero_shot_auroc(zi: torch.Tensor, class_z: torch.Tensor, normal_z: torch.Tensor, targets: torch.Tensor,
                    masks: torch.Tensor, names: list[str]) -> dict:
    """Per-observation AUROC of (cos(image, class) - cos(image, normal)) over the images whose label
    the policy keeps; observations without both a positive and a negative are listed, not scored."""
    from torchmetrics.functional.classification import binary_auroc

    scores = zi @ class_z.T - zi @ normal_z[:, None]  # (N, C)
    auroc, counts, unscored = {}, {}, []
    for j, n in enumerate(names):
        keep = masks[:, j]
        y = targets[keep, j]
        counts[n] = {"positive": int(y.sum()), "negative": int((1 - y).sum()), "left_out_uncertain": int((~keep).sum())}
        if 0 < int(y.sum()) < len(y):
            auroc[n] = round(binary_auroc(scores[keep, j], y.long()).item(), 4)
        else:
            unscored.append(n)
    return {"auroc": auroc, "macro_auroc": round(sum(auroc.values()) / len(auroc), 4) if auroc else None,
            "counts": counts, "not_scored_one_class_only": unscored}


def five_by_200_accuracy(zi: torch.Tensor, class_z: torch.Tensor, truth: torch.Tensor, names: list[str]) -> dict:
    pred = (zi @ class_z.T).argmax(1)
    conf = torch.zeros(len(names), len(names), dtype=torch.long)
    for t, p in zip(truth.tolist(), pred.tolist(), strict=True):
        conf[t, p] += 1
    per_class = {n: round(conf[k, k].item() / max(1, conf[k].sum().item()), 4) for k, n in enumerate(names)}
    return {"accuracy": round((pred == truth).float().mean().item(), 4), "per_class_accuracy": per_class,
            "confusion": {"rows_true_cols_predicted": list(names), "counts": conf.tolist()},
            "chance": round(1 / len(names), 4)}


def _dual(args):
    from .cxr import load_dual

    dual, tok, info = load_dual(args.run, args.tokenizer)
    size = args.image_size or int(info.get("image_size") or 224)
    return dual, tok, info, size


def _write(out: Path, name: str, result: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


@job("eval", "cxr-zeroshot", help="a dual tower's zero-shot classification on real CheXpert / MIMIC-CXR images "
     "(per-observation AUROC, or CheXpert 5x200 accuracy)",
     example="tessera eval cxr-zeroshot runs/cxr/clip/lightning_logs/version_0/encoder --chexpert ~/CheXpert-v1.0-small --five-by-200")
def eval_zeroshot(args) -> int:
    """Zero-shot classification of real radiographs with a trained dual tower's prompts.
    --chexpert ROOT: valid.csv (or --csv) scored per observation (AUROC, uncertain labels under
    --uncertainty); with --five-by-200, GLoRIA's CheXpert 5x200 set drawn from train.csv (or --csv:
    GLoRIA's own chexpert_5x200.csv gives its set back) and scored by accuracy over the 5 classes.
    --mimic ROOT: the official split's --split images with mimic-cxr-2.0.0-chexpert.csv labels.
    Writes zeroshot.json (or zeroshot_5x200.json) with every skipped row and image counted."""
    from modalities.cxr.chexpert import (
        COMPETITION,
        OBSERVATIONS,
        LabelStats,
        five_by_200,
        read_chexpert,
        resolve_chexpert_path,
    )

    if (args.chexpert is None) == (args.mimic is None):
        raise UserError("give one of --chexpert ROOT (the CheXpert release) or --mimic ROOT (MIMIC-CXR-JPG)")
    if args.five_by_200 and args.chexpert is None:
        raise UserError("--five-by-200 is drawn from CheXpert: give --chexpert ROOT")
    names = list(COMPETITION) if args.classes == "competition" or args.five_by_200 else list(OBSERVATIONS)
    prompts = load_prompts(args.prompts, names)
    dual, tok, info, size = _dual(args)
    out = Path(args.out)
    result: dict = {"model": info, "image_size": size, "images_are": "real files", "classes": names,
                    "prompts": {n: prompts[n] for n in names}, "normal_prompt": NORMAL_PROMPT}
    if args.chexpert is not None:
        root = Path(args.chexpert).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--chexpert {root} is not a folder; give the folder holding the CheXpert release")
        csv_path = Path(args.csv).expanduser() if args.csv else root / ("train.csv" if args.five_by_200 else "valid.csv")
        stats = LabelStats(unit="images")
        images = list(read_chexpert(csv_path, stats))
        if args.five_by_200:
            chosen = five_by_200(images, args.per_class, args.seed)
            picked = [im for im, _ in chosen]
            truth = torch.tensor([k for _, k in chosen])
        else:
            picked = images[: args.max_images] if args.max_images else images
            truth = None
        paths = [resolve_chexpert_path(root, im.path) for im in picked]
        data = {"dataset": "CheXpert", "csv": str(csv_path), "read": stats.to_dict()}
        if args.five_by_200:
            data["five_by_200"] = {"per_class": args.per_class, "seed": args.seed, "paths": [im.path for im in picked]}
    else:
        from types import SimpleNamespace

        from modalities.cxr.mimic import image_path, read_split_csv, read_study_labels

        root = Path(args.mimic).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--mimic {root} is not a folder; give the MIMIC-CXR-JPG folder (holding files/)")
        split_stats, label_stats = LabelStats(unit="images"), LabelStats(unit="studies")
        labels = read_study_labels(root / "mimic-cxr-2.0.0-chexpert.csv", label_stats)
        rows = [r for r in read_split_csv(root / "mimic-cxr-2.0.0-split.csv", split_stats) if r.split == args.split]
        unlabelled = sum(r.study_id not in labels for r in rows)
        rows = [r for r in rows if r.study_id in labels]
        rows = rows[: args.max_images] if args.max_images else rows
        paths = [root / image_path(r.subject_id, r.study_id, r.dicom_id) for r in rows]
        picked, truth = [SimpleNamespace(labels=labels[r.study_id]) for r in rows], None
        data = {"dataset": "MIMIC-CXR-JPG", "split": args.split,
                "read": {"split_csv": split_stats.to_dict(), "labels_csv": label_stats.to_dict()},
                "skipped_study_without_labels": unlabelled}
    present = [i for i, p in enumerate(paths) if p.is_file()]
    data["skipped_missing_image"] = len(paths) - len(present)
    if not present:
        raise FileNotFoundError(f"none of the {len(paths)} listed images is on disk (first: {paths[0] if paths else '-'}); "
                                "check the root folder")
    zi, ok, errors = embed_images(dual, [paths[i] for i in present], size, args.batch_size, args.workers)
    kept = [present[i] for i in ok]
    data.update(images_scored=len(kept), skipped_unreadable_image=len(errors), first_image_errors=errors[:3])
    class_z = embed_prompts(dual, tok, prompts, names)
    if truth is not None:
        result.update(data=data, metric="accuracy (argmax over the 5 class prompts)",
                      **five_by_200_accuracy(zi, class_z, truth[kept], names))
        name = "zeroshot_5x200.json"
        line = f"CheXpert 5x200: accuracy {result['accuracy']:.3f} over {len(kept)} images (chance {result['chance']})"
    else:
        normal_z = embed_prompts(dual, tok, {"normal": [NORMAL_PROMPT]}, ["normal"])[0]
        ys, ms = zip(*(picked[i].labels.target(args.uncertainty, names) for i in kept), strict=True)
        result.update(data=data, uncertainty=args.uncertainty, metric="AUROC of cos(image, class) - cos(image, normal)",
                      **zero_shot_auroc(zi, class_z, normal_z, torch.tensor(ys), torch.tensor(ms), names))
        name = "zeroshot.json"
        macro = result["macro_auroc"]
        line = f"{data['dataset']}: zero-shot AUROC {result['auroc']}, macro {macro if macro is None else f'{macro:.3f}'}"
    print(line)
    print(f"skipped: {data['skipped_missing_image']} missing and {data['skipped_unreadable_image']} unreadable image(s); "
          f"bad rows: {data['read'].get('skipped', data['read'])}")
    print(f"wrote {_write(out, name, result)}")
    return 0


@eval_zeroshot.arguments
def _(p) -> None:
    p.add_argument("run", help="the encoder/ folder of a clip run (text tower + dual_tower/), or the run folder")
    p.add_argument("--chexpert", help="the folder holding the CheXpert release (train.csv, valid.csv, train/, valid/)")
    p.add_argument("--mimic", help="the MIMIC-CXR-JPG folder (files/, mimic-cxr-2.0.0-split.csv, -chexpert.csv)")
    p.add_argument("--csv", help="CheXpert: the CSV to score (default valid.csv; with --five-by-200 train.csv)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="MIMIC: the official split")
    p.add_argument("--five-by-200", action="store_true", help="GLoRIA's CheXpert 5x200: accuracy over the 5 classes")
    p.add_argument("--per-class", type=int, default=200, help="5x200: images per class")
    p.add_argument("--classes", default="competition", choices=("competition", "all"),
                   help="AUROC over the 5 competition observations (default) or all 14")
    p.add_argument("--uncertainty", default="ignore", choices=("ignore", "ones", "zeros"),
                   help="uncertain (-1) labels: left out (default), positive (U-Ones) or negative (U-Zeros)")
    p.add_argument("--prompts", help="JSON {observation: [prompt, ...]} replacing the built-in prompts")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in the encoder folder)")
    p.add_argument("--image-size", type=int, help="default: the one the run trained at")
    p.add_argument("--max-images", type=int, help="score only the first N images (quick runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes")
    p.add_argument("--seed", type=int, default=0, help="5x200: the sampling seed")
    p.add_argument("--out", default="runs/cxr/zeroshot")


@job("eval", "cxr-image-retrieval", help="a dual tower's image <-> report Recall@K on real images (OpenI PNG or MIMIC-CXR-JPG)",
     example="tessera eval cxr-image-retrieval runs/cxr/clip/lightning_logs/version_0/encoder --layout openi --images ~/NLMCXR_png")
def eval_image_retrieval(args) -> int:
    """Image -> report and report -> image Recall@K (1, 5, 10), MRR and median rank with a trained
    dual tower on real radiographs. --layout openi: <images>/<image id>.png|.jpg|.dcm named as the
    OpenI reports' parentImage ids (the NLMCXR_png release), reports from --reports (default the
    cached OpenI); --split picks reports by id hash as training did, "all" takes every report.
    --layout mimic: MIMIC-CXR-JPG's files/p../p<subject>/s<study>/<dicom_id>.jpg on the official
    split, reports sectioned as MIMIC-CXR's own parser does. The text is the findings, else the
    impression. Writes image_retrieval.json with every skipped report and image counted."""
    from modalities.cxr import split_of

    from ..metrics.retrieval import dedup_gallery, retrieval_recall, retrieval_recall_any
    from .cxr import embed_texts, text_key

    images = Path(args.images).expanduser()
    if not images.is_dir():
        raise FileNotFoundError(f"--images {images} is not a folder; give the "
                                + ("OpenI PNG folder" if args.layout == "openi" else "MIMIC-CXR-JPG folder (holding files/)"))
    dual, tok, info, size = _dual(args)
    if args.layout == "openi":
        from ..data.cxr import IMAGE_SUFFIXES, load_reports

        reports, read = load_reports(args.reports)
        if args.split != "all":
            reports = [r for r in reports if split_of(r.uid) == args.split]
        pairs, missing = [], 0
        for r in reports:
            path = next((images / f"{i}{s}" for i in r.images for s in IMAGE_SUFFIXES if (images / f"{i}{s}").is_file()), None)
            if path is None:
                missing += 1
                continue
            pairs.append((path, r.findings or r.impression))
        data = {"layout": "openi", "reports": read, "split": args.split, "skipped_report_without_image": missing}
    else:
        from ..data.cxr_mimic import MimicCXRDataModule

        dm = MimicCXRDataModule(str(images), reports=args.reports, max_images=args.max_images)
        split = "test" if args.split == "all" else args.split
        loaded = dm.load()
        items = [it for s, its in loaded.items() for it in its] if args.split == "all" else loaded[split]
        pairs = [(p, rep.findings or rep.impression) for p, rep, _, _ in items]
        data = {"layout": "mimic", "split": args.split, "read": dm.read}
    pairs = pairs[: args.max_images] if args.max_images else pairs
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} image-report pair(s) under {images} ({data}); check --images (file names "
                         + ("<image id>.png" if args.layout == "openi" else "files/p../p<subject>/s<study>/<dicom_id>.jpg") + ")")
    zi, ok, errors = embed_images(dual, [p for p, _ in pairs], size, args.batch_size, args.workers)
    texts = [pairs[i][1] for i in ok]
    zt_all = embed_texts(_TextTower(dual), tok, texts)
    reps, target = dedup_gallery(texts, text_key)  # image -> report: one gallery entry per distinct text
    i2t = retrieval_recall(zi, zt_all[reps], target, KS)
    relevant = target[None, :] == torch.arange(len(reps))[:, None]  # (G, N): the images of each distinct text
    t2i = retrieval_recall_any(zt_all[reps], zi, relevant, KS)
    data.update(pairs=len(pairs), images_scored=len(ok), skipped_unreadable_image=len(errors),
                first_image_errors=errors[:3], distinct_reports=len(reps))
    result = {"model": info, "image_size": size, "images_are": "real files", "data": data,
              "image_to_report": i2t, "report_to_image": t2i}
    print(f"{len(ok)} real images, {len(reps)} distinct reports: image->report R@1 {i2t['recall@1']:.3f} "
          f"R@10 {i2t['recall@10']:.3f}; report->image R@1 {t2i['recall@1']:.3f} R@10 {t2i['recall@10']:.3f}")
    print(f"wrote {_write(Path(args.out), 'image_retrieval.json', result)}")
    return 0


class _TextTower(torch.nn.Module):
    """``embed_texts`` wants a module with ``encode(ids, mask)``: the dual tower's text side."""

    def __init__(self, dual):
        super().__init__()
        self.dual = dual

    def encode(self, ids, mask):
        return self.dual.encode_text(ids, mask)


@eval_image_retrieval.arguments
def _(p) -> None:
    p.add_argument("run", help="the encoder/ folder of a clip run (text tower + dual_tower/), or the run folder")
    p.add_argument("--layout", required=True, choices=("openi", "mimic"))
    p.add_argument("--images", required=True, help="openi: the PNG folder; mimic: the MIMIC-CXR-JPG folder")
    p.add_argument("--reports", help="openi: NLMCXR_reports.tgz or a folder of XML (default: the cached OpenI); "
                   "mimic: the reports' folder or mimic_cxr_sectioned.csv (default: --images)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in the encoder folder)")
    p.add_argument("--image-size", type=int, help="default: the one the run trained at")
    p.add_argument("--max-images", type=int, help="only the first N pairs (quick runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes")
    p.add_argument("--out", default="runs/cxr/image-retrieval")
