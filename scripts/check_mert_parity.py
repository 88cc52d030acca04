"""Parity of the MERT-v1 import at real size.

A random-weight transformers ``HubertModel`` of each MERT-v1 layout (95M: post-LN, GroupNorm
conv; 330M: pre-LN, GroupNorm conv as released) is saved as an HF folder with ``model_type`` "mert_model",
loaded through ``modalities.load_encoder``, and every hidden state of a ragged batch (2.0 s and
1.25 s at 24 kHz) is compared with HF run on each clip alone (README: HF's padded-batch GroupNorm).
The way back too: the imported encoder written with ``--format mert`` and re-loaded by transformers'
``HubertModel`` (``modalities.hub.check_parity``: every hidden state of two clips).

    python scripts/check_mert_parity.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import HubertConfig, HubertModel

import modalities


def check(stable: bool) -> tuple[int, float, float]:
    size = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096) if stable else {}
    cfg = HubertConfig(conv_bias=False, feat_extract_norm="group",
                       do_stable_layer_norm=stable, **size)
    hf = HubertModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        raw = json.loads((Path(d) / "config.json").read_text())
        raw["model_type"] = "mert_model"
        (Path(d) / "config.json").write_text(json.dumps(raw))
        enc = modalities.load_encoder(d)
        from modalities.exporting import export_folder
        from modalities.hub import check_parity

        modalities.save_encoder(enc, Path(d) / "tessera")
        back = check_parity(export_folder(Path(d) / "tessera", Path(d) / "exported", "mert"), enc)
    lengths = [48000, 30011]
    wav = torch.zeros(2, 48000)
    mask = torch.zeros(2, 48000, dtype=torch.long)
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n)
        mask[i, :n] = 1
    worst = 0.0
    with torch.no_grad():
        ours = enc(input_values=wav, attention_mask=mask, output_hidden_states=True)
        for i, n in enumerate(lengths):
            h = hf(wav[i : i + 1, :n], output_hidden_states=True)
            theirs = (*h.hidden_states[:-1], h.last_hidden_state)  # transformers 5: last state before the final norm
            T = h.last_hidden_state.shape[1]
            worst = max(worst, max(float((a[i, :T] - b[0]).abs().max()) for a, b in zip(ours.hidden_states, theirs, strict=True)))
    return len(ours.hidden_states), worst, back


def main() -> None:
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    for stable, name in ((False, "MERT-v1-95M layout"), (True, "MERT-v1-330M layout")):
        states, worst, back = check(stable)
        print(f"{name}: {states} hidden states, max abs difference vs HubertModel per clip {worst:.2e}; "
              f"exported with --format mert and re-loaded by HubertModel {back:.2e}")


if __name__ == "__main__":
    main()
