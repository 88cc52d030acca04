"""A trained dual tower (``tessera fit --config configs/cxr/clip_tiny.yaml``) on SYNTHETIC
images of the held-out OpenI reports: zero-shot AUROC per finding from prompts, and image <->
report Recall@K where a report counts when its findings match the image's. Writes JSON.

    python scripts/eval_cxr_clip.py runs/cxr/clip-tiny/lightning_logs/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.cxr import CLIPSystem
from tasks.cxr_eval import clip_synthetic_eval
from tasks.data.cxr import load_reports, report_tokenizer


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a CLIPSystem checkpoint written by tessera fit (this project's own file)")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the cached OpenI WordPiece of --vocab-size)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--out", help="JSON path (default: beside the checkpoint's run folder)")
    a = p.parse_args(argv)
    ckpt = Path(a.checkpoint)
    if not ckpt.is_file():
        p.error(f"{ckpt} does not exist")
    # our own checkpoint (LightningCLI stores the model's class_path config in it): not untrusted input
    system = CLIPSystem.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    reports, _ = load_reports()
    if a.tokenizer:
        from modalities.text import load_tokenizer

        tok = load_tokenizer(a.tokenizer)
    else:
        tok, _ = report_tokenizer(reports, a.vocab_size)
    result = clip_synthetic_eval(system.model, tok, reports, a.image_size)
    out = Path(a.out) if a.out else ckpt.parent.parent / "clip_synthetic_eval.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("images", "zero_shot_auroc", "zero_shot_macro_auroc")}))
    for d in ("i2t_same_findings", "t2i_same_findings"):
        r = result[d]
        print(f"{d}: R@1 {r['recall@1']:.3f} R@5 {r['recall@5']:.3f} R@10 {r['recall@10']:.3f}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
