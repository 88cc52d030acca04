"""CXR-BERT (microsoft/BiomedVLP-CXR-BERT-specialized; ``model_type`` "cxr-bert") as a Tessera encoder.

Upstream (hi-ml-multimodal, ``health_multimodal/text/model/modelling_cxrbert.py`` and
``configuration_cxrbert.py``; also vendored in Project-MONAI/research-contributions
``MedSyn/src/text_feature/``): ``CXRBertModel`` is a ``BertForMaskedLM`` (keys ``bert.*`` with no
[CLS] pooler, ``cls.predictions.*``) plus ``cls_projection_head`` (``BertProjectionHead``:
``dense_to_hidden`` D -> P, erf GELU, ``LayerNorm`` eps 1e-12, ``dense_to_output`` P -> P) applied to
the last layer's [CLS] state; ``get_projected_text_embeddings`` L2-normalises it. ``CXRBertConfig``
is ``BertConfig`` plus ``projection_size`` (128).

Here the BERT body is the shared ``TokenEncoder`` (every hidden state as ``BertModel`` gives it) and
the head is the named pooler ``cxr-bert-projection`` (``modalities.backbone.pooling``), kept as
``projection``; ``encode`` pools by ``config.pooling``: the head by default, or any other pooler
by name (``mean``, ``cls``, ...), in which case the head's weights stay in the folder unused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..backbone.config import TokenEncoderConfig
from ..backbone.encoder import TokenEncoder
from ..backbone.hf_bert import DROPPED, RENAMES, _strip, config_from_hf
from ..backbone.pooling import POOLERS, create_pooler
from ..hub import (
    read_config,
    read_state_dict,
    register_architecture,
    register_importer,
    register_parity,
)
from ..importing import KeyMap

PROJECTION = "cxr-bert-projection"  # the pooler name of CXR-BERT's projection head

KEYS = KeyMap(
    renames=[*RENAMES, (r"cls_projection_head\.(dense_to_hidden|LayerNorm|dense_to_output)\.(weight|bias)",
                        "projection.{0}.{1}")],
    dropped=DROPPED,  # bert.embeddings.position_ids, cls.predictions.* (the MLM head)
    qkv=re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)"),
    strip=_strip,
)


@dataclass
class CXRBertConfig(TokenEncoderConfig):
    projection_size: int = 128  # width P of the joint image-text space (upstream CXRBertConfig default)
    pooling: str = PROJECTION  # what encode() pools by: the projection head, or any registered pooler name

    def __post_init__(self) -> None:
        super().__post_init__()
        POOLERS.get(self.pooling)  # an unknown name lists the known ones


@register_architecture(CXRBertConfig)
class CXRBertEncoder(TokenEncoder):
    """BERT body (``forward`` -> every hidden state, as ``BertModel``) + CXR-BERT's projection head.

    ``encode(input_ids, attention_mask)`` -> (B, P) raw projection of the [CLS] state with the
    default pooling (upstream's ``cls_projected_embedding``), or (B, D) with another pooler."""

    architecture = "cxr_bert"

    def __init__(self, config: CXRBertConfig):
        super().__init__(config)
        self.projection = create_pooler(PROJECTION, config.hidden_size, projection_size=config.projection_size)
        self.hidden_size = config.hidden_size

    @property
    def output_dim(self) -> int:
        return self.config.projection_size if self.config.pooling == PROJECTION else self.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self(input_ids=input_ids, attention_mask=attention_mask)
        if self.config.pooling == PROJECTION:
            return self.projection(out.last_hidden_state, out.mask)  # (B, P)
        return create_pooler(self.config.pooling, self.hidden_size)(out.last_hidden_state, out.mask)  # (B, D)


def convert_state_dict(state_dict: dict[str, Tensor], config: CXRBertConfig) -> dict[str, Tensor]:
    """CXRBertModel state dict -> CXRBertEncoder state dict. Raises on any unexplained key."""
    out = KEYS.convert(state_dict)
    if config.type_vocab_size == 0:
        out.pop("frontend.token_type_embeddings.weight", None)
    return out


@register_importer("cxr-bert")
def load_cxr_bert(folder: Path, pooling: str = PROJECTION) -> tuple[CXRBertEncoder, dict]:
    """A CXR-BERT folder (config.json with ``model_type`` "cxr-bert" and ``projection_size``;
    pytorch_model.bin read with weights_only=True, or model.safetensors) -> CXRBertEncoder."""
    hf = read_config(folder)
    if "projection_size" not in hf:
        raise ValueError(f"{folder}/config.json says model_type 'cxr-bert' but has no projection_size; "
                         "CXRBertConfig always writes it: give the release's config.json")
    body = config_from_hf(hf)  # BERT's fields; errors name unsupported options before weights are read
    config = CXRBertConfig(**body.to_dict(), projection_size=int(hf["projection_size"]), pooling=pooling)
    raw = read_state_dict(folder)
    if not any(_strip(k).startswith("cls_projection_head.") for k in raw):
        raise ValueError(f"{folder} has a cxr-bert config.json but its weights hold no cls_projection_head.*; "
                         "they are not CXRBertModel's (BiomedVLP-CXR-BERT-general is a plain BERT: model_type 'bert')")
    encoder = CXRBertEncoder(config)
    encoder.load_state_dict(convert_state_dict(raw, config), strict=True)
    meta = {"source": str(folder), "model_type": "cxr-bert", "name": hf.get("_name_or_path", ""),
            "pooling": pooling, "dropped": KEYS.dropped_keys(raw),
            "applied": {"cls_projection_head": f"as the pooler {PROJECTION!r} (D {config.hidden_size} -> P "
                                              f"{config.projection_size}), module `projection`"}}
    return encoder, meta


@register_parity("cxr-bert")
def cxr_bert_parity(folder: Path, encoder: CXRBertEncoder) -> float:
    """Every hidden state of a ragged batch against transformers' BertModel holding the ``bert.*``
    weights, and the projection against the head's formula on BertModel's [CLS] state."""
    import torch
    from transformers import BertConfig, BertModel

    hf = read_config(folder)
    known = BertConfig().to_dict()
    ref = BertModel(BertConfig(**{k: v for k, v in hf.items() if k in known and k != "model_type"}),
                    add_pooling_layer=False)
    raw = read_state_dict(folder)
    body = {_strip(k): v for k, v in raw.items() if _strip(k).split(".")[0] in ("embeddings", "encoder")}
    body = {k: v for k, v in body.items() if not k.endswith(("position_ids", "token_type_ids"))}
    ref.load_state_dict(body, strict=False)
    missing = set(ref.state_dict()) - set(body) - {"embeddings.position_ids", "embeddings.token_type_ids"}
    if missing:
        raise ValueError(f"{folder}: the reference BertModel lacks weights for {sorted(missing)[:5]}")
    ref.eval()
    g = torch.Generator().manual_seed(0)
    lengths = [min(encoder.config.max_position_embeddings, n) for n in (17, 5, 11)]
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    vocab = encoder.config.vocab_size
    ids = torch.randint(min(5, vocab - 1), vocab, mask.shape, generator=g).masked_fill(~mask, encoder.config.pad_token_id)
    ours = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    theirs = ref(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    diff = max(float((a - b)[mask].abs().max()) for a, b in zip(ours, theirs, strict=True))
    head = {k.split(".", 1)[1]: v for k, v in ((_strip(k), v) for k, v in raw.items())
            if k.startswith("cls_projection_head.")}
    x = torch.nn.functional.linear(theirs[-1][:, 0], head["dense_to_hidden.weight"], head["dense_to_hidden.bias"])
    x = torch.nn.functional.layer_norm(torch.nn.functional.gelu(x), x.shape[-1:], head["LayerNorm.weight"],
                                       head["LayerNorm.bias"], eps=1e-12)
    x = torch.nn.functional.linear(x, head["dense_to_output.weight"], head["dense_to_output.bias"])
    proj = encoder.projection(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
    return max(diff, float((proj - x).abs().max()))
