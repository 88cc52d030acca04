"""Do the recsys cost levers keep quality? Validation NDCG@10 (full ranking, history removed) at an
equal number of updates, before the levers (fp32, ``nn.Dropout``, SDPA's attention dropout) and with
them (bf16-mixed, ``FastDropout``, the backbone's CPU attention path), on ML-100k, one thread.

    python scripts/check_recsys_levers.py bert4rec old 0 200   # BERT4Rec, bert4rec_demo.yaml's recipe
    python scripts/check_recsys_levers.py bert4rec new 0 200
    python scripts/check_recsys_levers.py sasrec old 0 80      # SASRec, sasrec_demo.yaml's recipe
    python scripts/check_recsys_levers.py sasrec new 0 80

Arguments: arch (bert4rec | sasrec), variant (old | new), seed, updates. Prints one RESULT line (JSON).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import lightning as L
    import torch

    import modalities.recsys.model as recsys_model
    from modalities.recsys import BERT4Rec, BERT4RecConfig, SASRec, SASRecConfig
    from tasks.data import SequenceDataModule
    from tasks.recsys import BERT4RecSystem, SASRecSystem

    if len(sys.argv) != 5 or sys.argv[1] not in ("bert4rec", "sasrec") or sys.argv[2] not in ("old", "new"):
        raise SystemExit("usage: check_recsys_levers.py bert4rec|sasrec old|new SEED UPDATES")
    arch, variant, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    if variant == "old":  # torch's nn.Dropout and SDPA's own attention dropout, as before the levers
        import modalities.backbone.attention as attention
        import modalities.backbone.embeddings as embeddings
        import modalities.backbone.layer as layer

        recsys_model._fast_dropouts = lambda module: None
        layer.FastDropout = embeddings.FastDropout = torch.nn.Dropout  # the networks are built later, in setup
        attention.MATMUL_ON_CPU = False
    L.seed_everything(seed, verbose=False)
    if arch == "bert4rec":
        dm = SequenceDataModule(max_length=20, batch_size=256, sequences="prefixes", last_item_ratio=0.5, seed=seed)
        system = BERT4RecSystem(BERT4Rec(BERT4RecConfig(num_items=0, max_length=20, dropout=0.1)), lr=3e-3, warmup=100)
    else:
        dm = SequenceDataModule(max_length=50, batch_size=128, objective="next", sequences="histories", seed=seed)
        system = SASRecSystem(SASRec(SASRecConfig(num_items=0, max_length=50, dropout=0.2)), lr=1e-3)
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with tempfile.TemporaryDirectory() as tmp:
        L.Trainer(max_steps=steps, enable_checkpointing=False, default_root_dir=tmp, limit_val_batches=0,
                  num_sanity_val_steps=0, precision="bf16-mixed" if variant == "new" else "32-true",
                  **quiet).fit(system, datamodule=dm)
        out = L.Trainer(default_root_dir=tmp, **quiet).validate(system, datamodule=dm, verbose=False)[0]
    print("RESULT", json.dumps({"arch": arch, "variant": variant, "seed": seed, "updates": steps,
                                "val_ndcg@10": out["val/ndcg@10"]}))


if __name__ == "__main__":
    main()
