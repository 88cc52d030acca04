"""What every checkpoint importer shares: a strict key map (rename table, fused QKV, named drops).

An importer describes the foreign layout as data and lets ``KeyMap.convert`` do the walk:

    BERT = KeyMap(
        renames=[(r"embeddings\\.word_embeddings\\.weight", "frontend.word_embeddings.weight"), ...],
        dropped={r"^pooler\\.": "BERT's [CLS] pooler: a task head, not the encoder"},
        qkv=re.compile(r"encoder\\.layer\\.(\\d+)\\.attention\\.self\\.(query|key|value)\\.(weight|bias)"),
        qkv_names=("query", "key", "value"),
        strip=lambda k: re.sub(r"^(bert|roberta)\\.", "", k),
    )
    state = BERT.convert(raw_state_dict)          # KeyError naming every unexplained key
    meta["dropped"] = BERT.dropped_keys(raw_state_dict)

Every source key is mapped, dropped by a rule with its reason, or an error that names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


def rename(key: str, renames) -> str | None:
    """The new name of ``key`` under the first (regex, format) pair of ``renames`` that matches it."""
    for pattern, target in renames:
        if m := re.fullmatch(pattern, key):
            return target.format(*m.groups())
    return None


def fuse_qkv(qkv: dict, names: tuple[str, str, str], out: dict) -> None:
    """{(layer, "weight"|"bias"): {name: tensor}} -> out["backbone.layers.L.attn.qkv.*"], rows [q; k; v].

    ``names`` are the checkpoint's spellings of query, key and value, in that order.
    """
    for (layer, kind), parts in sorted(qkv.items()):
        missing = set(names) - set(parts)
        if missing:
            raise KeyError(f"layer {layer} attention {kind} lacks {sorted(missing)}")
        # fused projection: rows [query; key; value], as SelfAttention.qkv expects
        out[f"backbone.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in names], dim=0)


# special(key, value, out) -> True when it consumed the key (layout rules a rename table cannot say)
Special = Callable[[str, Tensor, dict], bool]


@dataclass
class KeyMap:
    renames: list[tuple[str, str]]  # (source regex, target format with {0}, {1}, ...)
    dropped: dict[str, str]  # source regex -> why the key is not part of the encoder
    qkv: re.Pattern | None = None  # groups: (layer, which of qkv_names, "weight"|"bias")
    qkv_names: tuple[str, str, str] = ("query", "key", "value")
    strip: Callable[[str], str] = field(default=lambda k: k)  # source key -> the name the tables use

    def dropped_keys(self, state_dict: dict[str, Tensor]) -> dict[str, str]:
        """The source keys the conversion drops, each with its reason."""
        return {k: why for k in map(self.strip, state_dict) for p, why in self.dropped.items() if re.search(p, k)}

    def convert(self, state_dict: dict[str, Tensor], special: Special | None = None) -> dict[str, Tensor]:
        """Source state dict -> target state dict. Raises KeyError naming any unexplained key."""
        out: dict[str, Tensor] = {}
        qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
        unknown = []
        for raw_key, value in state_dict.items():
            key = self.strip(raw_key)
            if any(re.search(p, key) for p in self.dropped):
                continue
            if self.qkv is not None and (m := self.qkv.fullmatch(key)):
                layer, which, kind = m.groups()
                qkv.setdefault((int(layer), kind), {})[which] = value
            elif special is not None and special(key, value, out):
                continue
            elif (name := rename(key, self.renames)) is not None:
                out[name] = value
            else:
                unknown.append(raw_key)
        if unknown:
            raise KeyError(f"{len(unknown)} checkpoint keys are neither mapped nor on the drop list: {unknown[:10]}")
        fuse_qkv(qkv, self.qkv_names, out)
        return out
