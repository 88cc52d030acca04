"""Parity of the MERT-v1 import and ``--format mert`` export at real size (random weights).

A random-weight transformers ``HubertModel`` of each MERT-v1 layout (95M: post-LN, GroupNorm conv;
330M: pre-LN, GroupNorm conv, as released) is saved as an HF folder with ``model_type`` "mert_model"
and loaded through ``modalities.load_encoder``; a ragged batch (2.0 s and 1.25 s at 24 kHz) runs through
it and is compared with HubertModel run on each clip alone (its padded-batch GroupNorm differs, see
``modalities/audio/frontend.py``). The way back too: the imported encoder written with ``--format mert``
and re-loaded by transformers' ``HubertModel``.

Each comparison prints the last hidden state's max abs difference and relative error
(||ours - theirs|| / ||theirs||), and the same over every hidden state. Three more lines per layout
say where what is left comes from:
- "same GEMM kernel": ours with ``modalities.backbone.linear.use_onednn(False)``, i.e. torch's default
  fp32 GEMM, the one HubertModel's ``nn.Linear`` runs: what remains is batching (the padded clip's
  attention mask and conv shapes), not the formulas;
- "lone clip, same GEMM kernel": one unpadded clip, bit for bit (0 means the computation order is the same);
- "fp32 floor": HubertModel's own fp32 result against HubertModel in float64, on the same clips.

    python scripts/check_mert_parity.py            # both layouts; 330M takes ~2 min of CPU
    python scripts/check_mert_parity.py --layouts 330m
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from transformers import HubertConfig, HubertModel

import modalities
from modalities.audio.hf_mert import hidden_state_differences, hubert_reference
from modalities.backbone.linear import use_onednn
from modalities.exporting import export_folder

LAYOUTS = {
    "95m": dict(do_stable_layer_norm=False),
    "330m": dict(do_stable_layer_norm=True, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                 intermediate_size=4096),
}


@contextmanager
def default_gemm():
    previous = use_onednn(False)
    try:
        yield
    finally:
        use_onednn(previous)


def line(name: str, d: dict[str, float]) -> str:
    return (f"  {name:<34} last hidden state {d['last_abs']:.2e} abs, {d['last_rel']:.1e} rel | "
            f"every hidden state {d['all_abs']:.2e} abs, {d['all_rel']:.1e} rel")


def check(layout: str) -> None:
    """Prints the figures of one layout; one 330M model in memory at a time beside ours (~4 GB peak)."""
    import gc

    torch.manual_seed(0)
    hf = HubertModel(HubertConfig(conv_bias=False, feat_extract_norm="group", **LAYOUTS[layout])).eval()
    lengths = [48000, 30011]
    wav = torch.zeros(2, lengths[0])
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        raw = json.loads((Path(d) / "config.json").read_text())
        raw["model_type"] = "mert_model"
        (Path(d) / "config.json").write_text(json.dumps(raw))
        enc = modalities.load_encoder(d)
        print(f"MERT-v1-{layout.upper()} layout, {len(enc.backbone.layers) + 1} hidden states, clips of "
              f"{lengths[0]} and {lengths[1]} samples:", flush=True)
        print(line("import (vs HubertModel)", hidden_state_differences(hf, enc, wav, lengths)), flush=True)
        with default_gemm():
            print(line("import, same GEMM kernel", hidden_state_differences(hf, enc, wav, lengths)))
            print(line("lone clip, same GEMM kernel", hidden_state_differences(hf, enc, wav[:1], lengths[:1])), flush=True)
        modalities.save_encoder(enc, Path(d) / "tessera")
        back = hubert_reference(export_folder(Path(d) / "tessera", Path(d) / "exported", "mert"))
        print(line("export (re-loaded by HubertModel)", hidden_state_differences(back, enc, wav, lengths)), flush=True)
        del back, enc
        gc.collect()
    floor = {"last_abs": 0.0, "last_rel": 0.0, "all_abs": 0.0, "all_rel": 0.0}
    with torch.no_grad():
        h32 = []
        for i, n in enumerate(lengths):
            h = hf(wav[i : i + 1, :n], output_hidden_states=True)
            h32.append((*h.hidden_states[:-1], h.last_hidden_state))
        hf.double()  # the same weights in float64: the reference's own fp32 error
        for i, n in enumerate(lengths):
            h = hf(wav[i : i + 1, :n].double(), output_hidden_states=True)
            h64 = (*h.hidden_states[:-1], h.last_hidden_state)
            for j, (a, b) in enumerate(zip(h32[i], h64, strict=True)):
                ab, rel = float((a - b).abs().max()), float((a - b).norm() / b.norm())
                floor["all_abs"], floor["all_rel"] = max(floor["all_abs"], ab), max(floor["all_rel"], rel)
                if j == len(h64) - 1:
                    floor["last_abs"], floor["last_rel"] = max(floor["last_abs"], ab), max(floor["last_rel"], rel)
    print(line("fp32 floor (HubertModel vs float64)", floor), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["95m", "330m"])
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    for layout in args.layouts:
        check(layout)


if __name__ == "__main__":
    main()
