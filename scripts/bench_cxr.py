"""Two CXR benchmarks, each alternating the two sides within one run (median reported):

``lora``: text-tower embedding throughput (reports/s) of an LLM2Vec encoder with LoRA adapters
unmerged (peft layers on every q/k/v/o/gate/up/down projection) vs merged into the weights.
Same inputs (real OpenI report text), outputs checked equal.

``clip``: one dual-tower training step (forward, open_clip ``ClipLoss``, backward, AdamW) of
Tessera's ``DualTower`` (``TextTower`` on the shared backbone, unpadded attention + a timm image
tower with ``in_chans=1``) vs open_clip's own ``CustomTextCLIP`` with the same towers: its
``HFTextEncoder`` around a transformers ``BertModel`` of the same config (mean pooling, linear
projection) and its ``TimmModel`` around the same timm network (3-channel stem fed the
grayscale image repeated). Weights are copied across (the 3-channel stem's kernels summed), and
the two losses are checked equal in eval mode before timing. Inputs: real OpenI report text
(ragged, right-padded) and the SYNTHETIC radiographs drawn from the same reports.
``--freeze-text`` times the LLM2CLIP step instead (text tower frozen: ours runs it under
no_grad; open_clip's ``lock_text_tower``).

    python scripts/bench_cxr.py lora --hidden 512 --layers 4 --reps 5
    python scripts/bench_cxr.py clip --reps 5 [--freeze-text]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from modalities.cxr import LLM2VecConfig, LLM2VecEncoder, tiny_decoder


def texts_and_tokenizer(n: int):
    from tasks.data.cxr import load_reports, report_tokenizer

    reports, _ = load_reports()
    tok, _ = report_tokenizer(reports, 4096)
    return [r.text for r in reports[:n]], tok


def batches(texts, tok, batch_size: int, max_length: int = 128):
    from tasks.eval.cxr import tokenize

    return [tokenize(tok, texts[s : s + batch_size], max_length) for s in range(0, len(texts), batch_size)]


@torch.inference_mode()
def run(model, data) -> float:
    t = time.perf_counter()
    for ids, mask in data:
        model.encode(ids, mask)
    return time.perf_counter() - t


def bench_lora(a) -> dict:
    texts, tok = texts_and_tokenizer(a.reports)
    data = batches(texts, tok, a.batch_size)
    torch.manual_seed(0)
    dec = tiny_decoder("llama", vocab_size=4096, hidden_size=a.hidden, num_layers=a.layers, num_heads=8,
                       num_kv_heads=8, intermediate_size=a.hidden * 8 // 3 // 64 * 64)
    unmerged = LLM2VecEncoder(LLM2VecConfig(decoder=dec, lora_r=16)).eval()
    with torch.no_grad():
        for n, prm in unmerged.named_parameters():
            if "lora_B" in n:
                prm.normal_(0, 0.02)
    merged = copy.deepcopy(unmerged)
    merged.merge_lora()
    ids, mask = data[0]
    with torch.inference_mode():
        diff = (unmerged.encode(ids, mask) - merged.encode(ids, mask)).abs().max().item()
    run(unmerged, data[:1]), run(merged, data[:1])  # warm-up
    times = {"unmerged": [], "merged": []}
    for _ in range(a.reps):
        times["unmerged"].append(run(unmerged, data))
        times["merged"].append(run(merged, data))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": {"hidden": a.hidden, "layers": a.layers, "lora_r": 16, "lora_alpha": 32, "targets": "q,k,v,o,gate,up,down"},
        "reports": len(texts), "batch_size": a.batch_size, "threads": torch.get_num_threads(),
        "reports_per_s": {k: round(len(texts) / v, 1) for k, v in med.items()},
        "merged_speedup": round(med["unmerged"] / med["merged"], 2),
        "max_abs_diff_merged_vs_unmerged": diff, "seconds": times,
        "note": "repetitions alternate; the machine may be shared with other jobs",
    }
    print(json.dumps({k: result[k] for k in ("model", "reports_per_s", "merged_speedup", "max_abs_diff_merged_vs_unmerged")}))
    return result


# --- dual-tower training step: Tessera DualTower vs open_clip CustomTextCLIP -------------------
def build_pair(a):
    """(ours, theirs): the same BERT text tower and timm image tower, the same weights."""
    import tempfile

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
    from transformers import BertConfig

    from modalities.backbone import TokenEncoder
    from modalities.backbone.hf_bert import config_from_hf, convert_state_dict
    from modalities.cxr import DualTower, ImageTower, TextTower

    bert = BertConfig(vocab_size=4096, hidden_size=a.text_hidden, num_hidden_layers=a.text_layers,
                      num_attention_heads=a.text_hidden // 64, intermediate_size=4 * a.text_hidden,
                      max_position_embeddings=512, pad_token_id=0)
    folder = tempfile.mkdtemp(prefix="bench-cxr-bert-")
    bert.save_pretrained(folder)  # open_clip's HF text tower is built from a config folder
    theirs = CustomTextCLIP(
        a.embed_dim,
        vision_cfg=CLIPVisionCfg(timm_model_name=a.image_tower, timm_pool="avg", timm_proj="linear",
                                 image_size=a.image_size),
        text_cfg=CLIPTextCfg(hf_model_name=folder, hf_model_pretrained=False, hf_pooler_type="mean_pooler",
                             hf_proj_type="linear"),
    )
    cfg = config_from_hf(bert.to_dict())
    cfg.attention_backend = "unpadded"
    text = TextTower(TokenEncoder(cfg), pooling="mean")
    ours = DualTower(ImageTower(a.image_tower, source="timm"), text, embed_dim=a.embed_dim, freeze_text=False,
                     adapter_layers=0)
    with torch.no_grad():  # copy open_clip's weights into ours
        text.encoder.load_state_dict(convert_state_dict(theirs.text.transformer.state_dict(), cfg), strict=True)
        mine = ours.image_tower.model.state_dict()
        src = theirs.visual.trunk.state_dict()
        for k, v in src.items():  # the 3-channel stem on a repeated grayscale image = the summed kernel
            mine[k].copy_(v.sum(1, keepdim=True) if v.dim() == 4 and mine[k].shape[1] == 1 != v.shape[1] else v)
        ours.image_tower.model.load_state_dict(mine, strict=True)
        ours.image_proj.weight.copy_(theirs.visual.head.proj.weight)
        ours.text_proj.weight.copy_(theirs.text.proj.weight)
        ours.logit_scale.copy_(theirs.logit_scale)
    if a.freeze_text:  # LLM2CLIP: the text tower does not train
        from modalities.cxr.towers import freeze

        ours.freeze_text = True
        freeze(ours.text_tower)
        theirs.lock_text_tower()
    return ours, theirs


def clip_batches(a):
    from modalities.cxr.images import CXRTransform
    from modalities.cxr.synthetic import synth_radiograph
    from tasks.data.cxr import load_reports, report_tokenizer

    reports, _ = load_reports()
    tok, _ = report_tokenizer(reports, 4096)
    rs = reports[: a.batch_size * a.batches]
    texts = [r.findings or r.impression for r in rs]
    tf = CXRTransform(a.image_size)
    out = []
    for s in range(0, len(rs), a.batch_size):
        ids, mask = batches(texts[s : s + a.batch_size], tok, a.batch_size)[0]
        images = torch.stack([tf(synth_radiograph(r.uid, t, a.image_size))
                              for r, t in zip(rs[s : s + a.batch_size], texts[s : s + a.batch_size], strict=True)])
        out.append((images, ids, mask))
    return out


def bench_clip(a) -> dict:
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    ours, theirs = build_pair(a)
    data = clip_batches(a)
    loss_fn = ClipLoss()

    def loss_ours(images, ids, mask):
        return loss_fn(**ours(images, ids, mask))

    def loss_theirs(images, ids, mask):  # pads are id 0: HFTextEncoder builds its mask from them
        img, txt = theirs.encode_image(images.expand(-1, 3, -1, -1), normalize=True), theirs.encode_text(ids, normalize=True)
        return loss_fn(img, txt, theirs.logit_scale.exp().clamp(max=100.0))

    ours.eval(), theirs.eval()
    with torch.no_grad():
        images, ids, mask = data[0]
        o = ours(images, ids, mask)
        img_t = theirs.encode_image(images.expand(-1, 3, -1, -1), normalize=True)
        txt_t = theirs.encode_text(ids, normalize=True)
        parity = {"image_features": (o["image_features"] - img_t).abs().max().item(),
                  "text_features": (o["text_features"] - txt_t).abs().max().item(),
                  "loss": abs(loss_fn(**o).item() - loss_theirs(*data[0]).item())}
    if max(parity.values()) > 1e-4:
        raise RuntimeError(f"the two dual towers disagree before timing (max abs diff): {parity}")
    ours.train(), theirs.train()
    opts = {name: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4)
            for name, m in (("tessera", ours), ("open_clip", theirs))}
    steps = {"tessera": loss_ours, "open_clip": loss_theirs}

    def run_steps(name) -> float:
        t = time.perf_counter()
        for batch in data:
            opts[name].zero_grad(set_to_none=True)
            steps[name](*batch).backward()
            opts[name].step()
        return (time.perf_counter() - t) / len(data)

    run_steps("tessera"), run_steps("open_clip")  # warm-up
    times = {"tessera": [], "open_clip": []}
    for r in range(a.reps):
        for name in (("tessera", "open_clip") if r % 2 == 0 else ("open_clip", "tessera")):
            times[name].append(run_steps(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = [int(m.sum()) for _, _, m in data]
    result = {
        "what": "one dual-tower training step (forward, ClipLoss, backward, AdamW)",
        "text_tower": {"bert_hidden": a.text_hidden, "layers": a.text_layers, "vocab": 4096,
                       "trainable": not a.freeze_text},
        "image_tower": {"timm": a.image_tower, "image_size": a.image_size, "images": "SYNTHETIC"},
        "embed_dim": a.embed_dim, "batch_size": a.batch_size, "batches": a.batches,
        "real_tokens_per_batch": tokens, "padded_tokens_per_batch": [int(m.numel()) for _, _, m in data],
        "threads": torch.get_num_threads(), "max_abs_diff_eval_mode": parity,
        "seconds_per_step": {k: round(v, 4) for k, v in med.items()},
        "speedup_tessera_over_open_clip": round(med["open_clip"] / med["tessera"], 2),
        "seconds": times,
        "note": "repetitions alternate (order flipped every repetition); the machine was shared with other jobs",
    }
    print(json.dumps({k: result[k] for k in ("text_tower", "image_tower", "max_abs_diff_eval_mode", "seconds_per_step",
                                             "speedup_tessera_over_open_clip")}))
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    lo = sub.add_parser("lora", help="LLM2Vec embedding throughput, LoRA merged vs unmerged")
    lo.add_argument("--hidden", type=int, default=512)
    lo.add_argument("--layers", type=int, default=4)
    lo.add_argument("--reports", type=int, default=256)
    lo.add_argument("--batch-size", type=int, default=32)
    lo.add_argument("--reps", type=int, default=5)
    lo.add_argument("--out", default="runs/bench/cxr_lora.json")
    cl = sub.add_parser("clip", help="dual-tower training step vs open_clip CustomTextCLIP")
    cl.add_argument("--text-hidden", type=int, default=256, help="BERT width (heads = width / 64)")
    cl.add_argument("--text-layers", type=int, default=4)
    cl.add_argument("--image-tower", default="resnet10t", help="a timm model name")
    cl.add_argument("--image-size", type=int, default=128)
    cl.add_argument("--embed-dim", type=int, default=128)
    cl.add_argument("--batch-size", type=int, default=32)
    cl.add_argument("--batches", type=int, default=4, help="distinct batches per repetition (real report lengths)")
    cl.add_argument("--reps", type=int, default=5)
    cl.add_argument("--freeze-text", action="store_true", help="LLM2CLIP: the text tower frozen")
    cl.add_argument("--out", default=None, help="JSON (default runs/bench/cxr_clip[_frozen].json)")
    a = p.parse_args(argv)
    result = bench_lora(a) if a.bench == "lora" else bench_clip(a)
    out = Path(a.out or f"runs/bench/cxr_clip{'_frozen' if a.freeze_text else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
