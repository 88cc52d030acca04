"""Reading LLM2Vec releases as they are published, for ``load_llm2vec`` / ``load_encoder``.

What upstream does (McGill-NLP/llm2vec, ``llm2vec/llm2vec.py``, ``LLM2Vec.from_pretrained`` and
``LLM2Vec.save``; ``llm2vec/models/bidirectional_*.py``):
- the "MNTP" release folder (e.g. ``LLM2Vec-Meta-Llama-3-8B-Instruct-mntp``) holds the base
  decoder's ``config.json`` and a peft LoRA adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``) whose ``base_model_name_or_path`` names the decoder weights;
  ``from_pretrained`` loads the decoder with that adapter and merges it;
- a second adapter (``...-mntp-supervised`` / ``...-mntp-unsup-simcse``) is applied on top
  (``peft_model_name_or_path``), merged only with ``merge_peft=True``;
- ``llm2vec_config.json`` (``pooling_mode``, ``max_length``, ``doc_max_length``,
  ``skip_instruction``) is read from the second adapter's folder when one is given, else from
  the base folder; the pooling modes are mean, weighted_mean, eos_token / last_token, bos_token;
- tokenisation pads on the left; with ``skip_instruction`` the pooled tokens are the text's own
  (``embed_mask``: the last len(text tokens) positions), the instruction is attended to but not pooled;
- the bidirectional models (Llama, Mistral, Qwen2, Gemma) clear ``is_causal`` and build a padding-only
  4-D mask.
LLM2Vec4CXR (lukeingawesome/llm2vec4cxr, ``llm2vec/llm2vec.py`` ``LatentAttentionPooling`` and
``llm2vec_wrapper.py``) adds ``pooling_mode`` "latent_attention" whose weights (``latent_attn.latents``,
``latent_attn.multihead_attn.*``, ``latent_attn.mlp.{0,2}.*``; 8 heads) sit inside the base model's
``model.safetensors`` beside ``LlamaBiModel``'s own keys (no ``model.`` prefix).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..exporting import register_exporter
from ..hub import read_state_dict

UPSTREAM_CONFIG = "llm2vec_config.json"  # upstream's own file: pooling_mode, max_length, doc_max_length, skip_instruction
ADAPTER_CONFIG = "adapter_config.json"
# upstream pooling_mode -> Tessera pooler name
POOLING_MODES = {"mean": "mean", "weighted_mean": "weighted_mean", "eos_token": "eos", "last_token": "eos",
                 "bos_token": "bos", "latent_attention": "latent_attention"}
LATENT_HEADS = 8  # LLM2Vec4CXR's LatentAttentionPooling: num_heads=8 (not recoverable from the weights)
_ROTARY = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def pooling_name(mode: str, where: str) -> str:
    """An upstream ``pooling_mode`` (or a Tessera pooler name) -> the Tessera pooler name."""
    if mode in POOLING_MODES:
        return POOLING_MODES[mode]
    if mode in POOLING_MODES.values():
        return mode
    raise ValueError(f"{where}: pooling_mode {mode!r} is not one LLM2Vec defines; known: {sorted(POOLING_MODES)}")


def read_upstream_config(folder: Path) -> dict | None:
    """``llm2vec_config.json`` of ``folder`` (None when absent); unknown keys are an error naming them."""
    path = folder / UPSTREAM_CONFIG
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    known = {"pooling_mode", "max_length", "doc_max_length", "skip_instruction"}
    if not isinstance(cfg, dict) or set(cfg) - known:
        raise ValueError(f"{path}: expected an object with keys among {sorted(known)}, got {cfg!r:.200}")
    return cfg


def has_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json",
                                               "pytorch_model.bin", "pytorch_model.bin.index.json"))


def read_weights(folder: Path) -> dict[str, Tensor]:
    """Every tensor of a decoder folder: one file or shards listed by ``*.index.json`` (safetensors,
    or ``.bin`` read with weights_only=True)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                path = folder / shard
                if not path.is_file():
                    raise FileNotFoundError(f"{folder / index} lists {shard}, which is not in {folder}; download every shard")
                state.update(load_file(path) if shard.endswith(".safetensors")
                             else torch.load(path, map_location="cpu", weights_only=True))
            return state
    return read_state_dict(folder)


def resolve_base(folder: Path, name: str | None) -> Path:
    """The folder holding the decoder weights an adapter folder names (``base_model_name_or_path``):
    a local folder (absolute or relative to ``folder``), else a snapshot in the local HF cache."""
    if not name:
        raise ValueError(f"{folder} holds no decoder weights and its {ADAPTER_CONFIG} names no base_model_name_or_path; "
                         "give the decoder folder as base_model")
    for candidate in (Path(name).expanduser(), folder / name):
        if candidate.is_dir() and has_weights(candidate):
            return candidate
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(repo_id=name, local_files_only=True))
        if has_weights(cached):
            return cached
    except Exception:  # noqa: BLE001  (not an id, not cached, or huggingface_hub missing: all say "not here")
        pass
    raise FileNotFoundError(f"{folder} is an LLM2Vec adapter folder whose base model {name!r} is not on this machine "
                            f"(neither a folder nor in the local HF cache); download it and pass its folder as base_model")


def split_checkpoint(state: dict[str, Tensor]) -> tuple[dict, dict, dict, dict]:
    """A decoder checkpoint (``XForCausalLM``'s ``model.*`` + ``lm_head.*``, or the bidirectional
    base model's unprefixed keys, LLM2Vec4CXR's ``latent_attn.*`` beside them) ->
    (base model state, lm head state, latent-attention pooler state, dropped keys with reasons)."""
    base, head, pooler, dropped = {}, {}, {}, {}
    for key, value in state.items():
        if _ROTARY.search(key):
            dropped[key] = "RoPE inverse frequencies: a buffer recomputed from the config"
        elif key.startswith("latent_attn."):
            name = key[len("latent_attn."):].replace("multihead_attn.", "attn.", 1)
            pooler[name] = value
        elif key.startswith("lm_head."):
            head[key[len("lm_head."):]] = value
        else:
            base[key[len("model."):] if key.startswith("model.") else key] = value
    return base, head, pooler, dropped


def adapter_summary(folder: Path) -> dict:
    cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    return {"path": str(folder), "base_model_name_or_path": cfg.get("base_model_name_or_path"),
            "peft_type": cfg.get("peft_type", "LORA"), "r": cfg.get("r"), "lora_alpha": cfg.get("lora_alpha"),
            "target_modules": sorted(cfg.get("target_modules") or [])}


def read_adapter_weights(folder: Path) -> dict[str, Tensor]:
    if (folder / "adapter_model.safetensors").is_file():
        return load_file(folder / "adapter_model.safetensors")
    if (folder / "adapter_model.bin").is_file():
        return torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has {ADAPTER_CONFIG} but neither adapter_model.safetensors nor adapter_model.bin")


def check_adapter_fits(folder: Path, model: nn.Module, base_desc: str) -> None:
    """Refuse an adapter that does not fit ``model`` (an adapter trained on another base), naming
    each module it cannot land on; peft itself would load such an adapter partly, with a warning."""
    summary = adapter_summary(folder)
    if summary["peft_type"] != "LORA":
        raise ValueError(f"{folder}: peft_type {summary['peft_type']!r}; LLM2Vec adapters are LoRA")
    modules = dict(model.named_modules())
    problems = []
    for key, t in read_adapter_weights(folder).items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        if m is None:
            problems.append(f"{key} is not a LoRA A/B weight")
            continue
        name, ab = m.groups()
        mod = modules.get(name)
        if not isinstance(mod, nn.Linear):
            problems.append(f"{name} is not a linear layer of the base model")
        elif ab == "A" and t.shape[1] != mod.in_features:
            problems.append(f"{name}.lora_A takes {t.shape[1]} inputs, the layer {mod.in_features}")
        elif ab == "B" and t.shape[0] != mod.out_features:
            problems.append(f"{name}.lora_B gives {t.shape[0]} outputs, the layer {mod.out_features}")
    if problems:
        raise ValueError(f"{folder}: this adapter does not fit the base model it is applied to ({base_desc}); it was "
                         f"trained on {summary['base_model_name_or_path']!r}: {'; '.join(problems[:3])}"
                         + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))


def embed_mask_from_lengths(attention_mask: Tensor, text_lengths: Tensor) -> Tensor:
    """Upstream's ``embed_mask``: the last ``text_lengths[b]`` real tokens of each row (the text
    after the instruction), for left- or right-padded ``attention_mask`` (B, T)."""
    m = attention_mask.bool()
    # rank of each real token counted from the row's end: 1 for the last real token
    from_end = m.flip(1).int().cumsum(1).flip(1) * m  # (B, T)
    return m & (from_end <= text_lengths.to(m.device)[:, None])


# --- the way back: an LLM2Vec encoder folder -> base decoder + peft adapter + llm2vec_config.json ---
_UPSTREAM_MODE = {"mean": "mean", "weighted_mean": "weighted_mean", "eos": "eos_token", "bos": "bos_token",
                  "cls": "bos_token", "latent_attention": "latent_attention"}


def _unmerge(model: nn.Module, adapter: Path) -> None:
    """W <- W - lora_alpha / r * B A for every layer of ``adapter``: the base its LoRA was trained on,
    from weights the adapter was merged into (Tessera's training export: merged weights + adapter/)."""
    cfg = json.loads((adapter / ADAPTER_CONFIG).read_text())
    if cfg.get("use_rslora") or cfg.get("use_dora"):
        raise ValueError(f"{adapter}: rsLoRA / DoRA adapters cannot be taken back out of merged weights here")
    ab = read_adapter_weights(adapter)
    with torch.no_grad():
        for key, a in ab.items():
            if ".lora_A." in key:
                name = re.sub(r"^base_model\.model\.", "", key.split(".lora_A.")[0])
                b = ab[key.replace(".lora_A.", ".lora_B.")]
                w = model.get_submodule(name).weight
                w -= (cfg["lora_alpha"] / cfg["r"] * (b.float() @ a.float())).to(w.dtype)


@register_exporter("llm2vec", help="base decoder + peft adapter/ + llm2vec_config.json (LLM2Vec.from_pretrained, "
                                  "transformers + peft)")
def write_llm2vec_folder(src: Path, out: Path, **options) -> Path:
    """An LLM2Vec encoder folder -> what ``LLM2Vec.from_pretrained(out, peft_model_name_or_path=out/"adapter")``
    and ``transformers`` + ``peft`` read: ``out/`` the base decoder (config.json + model.safetensors in
    XForCausalLM's layout; a latent-attention pooler as LLM2Vec4CXR's ``latent_attn.*`` beside it),
    ``out/adapter/`` the last LoRA stage in peft's layout, ``llm2vec_config.json`` where upstream
    looks for it (the adapter folder, else ``out/``), and the tokenizer files. An encoder with no
    adapter left (all merged, none saved beside it) is written as the base alone."""
    from safetensors.torch import save_file

    from ..hub import TOKENIZER_FILES, load_encoder
    from .llm2vec import LLM2VecEncoder

    enc = load_encoder(src)
    if not isinstance(enc, LLM2VecEncoder):
        raise ValueError(f"{src} holds a {type(enc).__name__}; --format llm2vec takes LLM2Vec encoders (decoder + pooler)")
    out.mkdir(parents=True, exist_ok=True)
    adapter = None
    if enc.has_lora:  # an unmerged LoRA: save it, keep the weights under it
        enc.model.save_pretrained(str(out / "adapter"))
        enc.model = enc.model.unload()
        adapter = out / "adapter"
    elif (src / "adapter" / ADAPTER_CONFIG).is_file():  # merged weights + the adapter that was merged into them
        _unmerge(enc.model, src / "adapter")
        import shutil

        shutil.copytree(src / "adapter", out / "adapter", dirs_exist_ok=True)
        adapter = out / "adapter"
    if adapter is not None:
        cfg = json.loads((adapter / ADAPTER_CONFIG).read_text())
        cfg["base_model_name_or_path"] = str(out.resolve())  # the base written beside it
        (adapter / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        for stray in ("README.md", "pooler.safetensors"):
            (adapter / stray).unlink(missing_ok=True)
    state = {f"model.{k}": v.detach().contiguous() for k, v in enc.model.state_dict().items()}
    if enc.lm_head is not None:
        state["lm_head.weight"] = enc.lm_head.weight.detach().contiguous()
    if enc.config.pooling == "latent_attention":
        state.update({f"latent_attn.{k.replace('attn.', 'multihead_attn.', 1)}": v.detach().contiguous()
                      for k, v in enc.pooler.state_dict().items()})
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    hf_cfg = enc.config.hf_config()
    hf_cfg.architectures = [type(enc.model).__name__.replace("Model", "ForCausalLM")]
    hf_cfg.save_pretrained(str(out))
    mode = _UPSTREAM_MODE.get(enc.config.pooling)
    if mode is None:
        raise ValueError(f"{src} pools by {enc.config.pooling!r}, which LLM2Vec has no pooling_mode for "
                         f"(it has {sorted(set(_UPSTREAM_MODE.values()))})")
    (adapter or out).joinpath(UPSTREAM_CONFIG).write_text(json.dumps(
        {"pooling_mode": mode, "max_length": 512, "doc_max_length": 400,
         "skip_instruction": enc.config.skip_instruction}, indent=4) + "\n")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            import shutil

            shutil.copy2(src / name, out / name)
    return out


# --- upstream's text preparation: instruction + separator, embed_mask, left padding ---------------
SEPARATOR = "!@#$%^&*()"  # upstream's marker between an instruction and its text
# model_type -> what upstream appends to the text for eos_token pooling (prepare_for_tokenization)
EOS_SUFFIX = {"llama": " </s>", "mistral": " </s>", "gemma": "<eos>", "qwen2": "<|endoftext|>"}
EOS_SUFFIX_BY_NAME = {"meta-llama/Meta-Llama-3-8B": "<|end_of_text|>"}
# _name_or_path -> (prefix, suffix) of the chat turn upstream wraps every input in
CHAT_TURN = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
    "mistralai/Mistral-7B-Instruct-v0.2": ("[INST] ", " [/INST]"),
    "meta-llama/Llama-2-7b-chat-hf": ("[INST] ", " [/INST]"),
    "google/gemma-2-9b-it": ("<bos><start_of_turn>user\n", "<end_of_turn>"),
    "Qwen/Qwen2-1.5B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
    "Qwen/Qwen2-7B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
}


def llm2vec_inputs(tokenizer, texts: list[str], instruction: str = "", pooling: str = "mean",
                   model_type: str = "llama", name_or_path: str = "", max_length: int = 512) -> dict[str, Tensor]:
    """Texts (+ one instruction for all) -> {input_ids, attention_mask, embed_mask} (B, T), left-padded,
    as ``LLM2Vec.encode`` prepares them: the instruction and the text are tokenised together, the
    text's own tokens (counted without special tokens, at the end of the row) form ``embed_mask``;
    the model's chat turn wraps the whole input (Llama-3 / Mistral / Llama-2 / Gemma-2 / Qwen2
    instruct models, by ``name_or_path``) and eos_token pooling appends the end-of-text token.
    ``tokenizer``: the release's transformers tokenizer (its pad token set to EOS if it has none)."""
    prepared = []
    for text in texts:
        s = f"{instruction.strip()} {SEPARATOR}{text}" if instruction else f"{SEPARATOR}{text}"
        if name_or_path in CHAT_TURN:
            before, after = CHAT_TURN[name_or_path]
            s = before + s.strip() + after
        if pooling in ("eos", "eos_token") and name_or_path != "meta-llama/Meta-Llama-3-8B-Instruct":
            s = s.strip() + EOS_SUFFIX_BY_NAME.get(name_or_path, EOS_SUFFIX.get(model_type, ""))
        prepared.append(s)
    parts = [s.split(SEPARATOR) for s in prepared]
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        batch = tokenizer(["".join(p) for p in parts], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length)
        n_text = [len(tokenizer(p[1] if len(p) > 1 else "", add_special_tokens=False, truncation=True,
                                max_length=max_length)["input_ids"]) for p in parts]
    finally:
        tokenizer.padding_side, tokenizer.pad_token = side, pad
    batch["embed_mask"] = embed_mask_from_lengths(batch["attention_mask"], torch.tensor(n_text)).long()
    return dict(batch)


# --- LLM2CLIP's text side: the CLIP-stage LoRA inside a CLIP checkpoint --------------------------
# lukeingawesome/llm2clip4cxr: training/llm2vec_wrapper.py add_lora_adapters(lora_alpha=32) and retrieval.py --lora-alpha 32
LLM2CLIP4CXR_LORA_ALPHA = 32.0
PEFT_DEFAULT_LORA_ALPHA = 8.0  # peft's LoraConfig default, for an adapter_config.json that omits lora_alpha


def find_adapter_config(where: str | Path, adapter_name: str) -> Path | None:
    """The adapter_config.json for ``adapter_name``: ``where`` itself, ``where/adapter_config.json``, or
    ``where/<adapter_name>/adapter_config.json`` (peft's save_pretrained puts a non-default adapter there)."""
    where = Path(where)
    for candidate in (where, where / ADAPTER_CONFIG, where / adapter_name / ADAPTER_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def lora_scaling(adapter_name: str, r: int, lora_alpha: float | None, adapter_config: str | Path | None) -> dict:
    """LoRA's scale for ``adapter_name`` and where its lora_alpha came from: the caller's value, else the
    adapter's adapter_config.json (lora_alpha, r checked against the weights' rank, use_rslora), else
    LLM2CLIP4CXR's training default (32)."""
    if lora_alpha is not None:
        return {"lora_alpha": float(lora_alpha), "lora_alpha_source": "given by the caller", "use_rslora": False}
    path = find_adapter_config(adapter_config, adapter_name) if adapter_config is not None else None
    if adapter_config is not None and path is None:
        raise FileNotFoundError(f"{adapter_config}: no {ADAPTER_CONFIG} there (looked for the file, "
                                f"{ADAPTER_CONFIG} and {adapter_name}/{ADAPTER_CONFIG}); give the adapter's folder")
    if path is None:
        return {"lora_alpha": LLM2CLIP4CXR_LORA_ALPHA, "use_rslora": False,
                "lora_alpha_source": "assumed: LLM2CLIP4CXR's training default (llm2vec_wrapper.add_lora_adapters, "
                                     "retrieval.py --lora-alpha 32); no adapter_config.json was given"}
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path} is not a peft LoRA adapter config (peft_type {cfg.get('peft_type') if isinstance(cfg, dict) else cfg!r})")
    if cfg.get("r") is not None and int(cfg["r"]) != r:
        raise ValueError(f"{path} says r={cfg['r']}, the checkpoint's LoRA pairs have rank {r}: it belongs to another adapter")
    if cfg.get("use_dora"):
        raise ValueError(f"{path}: a DoRA adapter is not a plain LoRA delta; it cannot be merged as W + s B A")
    alpha = cfg.get("lora_alpha")
    source = f"{path}: lora_alpha" if alpha is not None else f"{path} has no lora_alpha: peft's LoraConfig default"
    return {"lora_alpha": float(alpha if alpha is not None else PEFT_DEFAULT_LORA_ALPHA), "lora_alpha_source": source,
            "use_rslora": bool(cfg.get("use_rslora"))}


def merge_lora_deltas(encoder: nn.Module, state: dict[str, Tensor], adapter_name: str = "llm2clip",
                      lora_alpha: float | None = None, adapter_config: str | Path | None = None) -> dict:
    """Fold the LoRA deltas an LLM2CLIP(4CXR) checkpoint carries for its LLM2Vec text tower into
    ``encoder`` (an LLM2VecEncoder): keys ``text.model.model.base_model.model.<module>.lora_{A,B}.<adapter>.weight``
    (lukeingawesome/llm2clip4cxr ``training/llm2vec_wrapper.py`` ``add_lora_adapters``: adapter
    "llm2clip", r 16, lora_alpha 32, q/k/v/o; ``retrieval.py`` loads them from ``text.model.*`` /
    ``text.core.*``). Only ``adapter_name``'s pairs are merged (W + lora_alpha / r * B A, or / sqrt(r) with
    rsLoRA; r read from A); the others (peft's idle "default") are counted in the summary.
    ``lora_alpha`` is not in the checkpoint: it is read from the adapter's ``adapter_config.json`` when
    ``adapter_config`` names it (the file, its folder, or a folder holding ``<adapter_name>/``), else
    LLM2CLIP4CXR's training default 32 is assumed; ``lora_alpha=`` overrides both. The summary (also
    put in ``encoder.meta["llm2clip_lora"]``) says which value was used and where it came from. Every
    pair must land on a linear layer of the right shape."""
    pat = re.compile(r"(?:^|\.)base_model\.model\.(.+)\.lora_([AB])\.([^.]+)\.weight$")
    pairs: dict[str, dict[str, Tensor]] = {}
    others: dict[str, int] = {}
    for key, t in state.items():
        m = pat.search(key)
        if m is None or not key.startswith(("text.model.", "text.core.", "base_model.")):
            continue
        name, ab, adapter = m.groups()
        name = re.sub(r"^model\.base_model\.model\.", "", name)
        if adapter != adapter_name:
            others[adapter] = others.get(adapter, 0) + 1
            continue
        pairs.setdefault(name, {})[ab] = t
    if not pairs:
        raise ValueError(f"no LoRA pairs of adapter {adapter_name!r} in the checkpoint (adapters seen: "
                         f"{sorted(others) or 'none'})")
    ranks = {ab["A"].shape[0] for ab in pairs.values() if "A" in ab}
    if len(ranks) > 1:
        raise ValueError(f"LoRA pairs of adapter {adapter_name!r} have ranks {sorted(ranks)}; one adapter has one rank")
    scaling = lora_scaling(adapter_name, next(iter(ranks), 0), lora_alpha, adapter_config)
    base = encoder.base()
    modules = dict(base.named_modules())
    with torch.no_grad():
        for name, ab in sorted(pairs.items()):
            mod = modules.get(name)
            if set(ab) != {"A", "B"}:
                raise ValueError(f"LoRA pair {name} lacks lora_{'B' if 'A' in ab else 'A'}")
            if not isinstance(mod, nn.Linear) or ab["A"].shape[1] != mod.in_features or ab["B"].shape[0] != mod.out_features:
                raise ValueError(f"LoRA pair {name} ({tuple(ab['B'].shape)} x {tuple(ab['A'].shape)}) does not fit this "
                                 "text tower: it was trained on another base")
            r = ab["A"].shape[0]
            scale = scaling["lora_alpha"] / (r ** 0.5 if scaling["use_rslora"] else r)
            mod.weight += (scale * (ab["B"].float() @ ab["A"].float())).to(mod.weight.dtype)
    summary = {"adapter_name": adapter_name, "merged_modules": len(pairs), "r": sorted(ranks), **scaling,
               "other_adapters_not_merged": others}
    if isinstance(getattr(encoder, "meta", None), dict):
        encoder.meta["llm2clip_lora"] = summary
    return summary
