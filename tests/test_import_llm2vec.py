"""LLM2Vec releases through load_llm2vec / load_encoder, against the llm2vec package's computation
re-derived here (the package pins transformers 4.x and does not install beside transformers 5):
transformers' own decoder with ``is_causal`` cleared and LlamaBiModel's padding-only 4-D mask,
each LoRA adapter merged by hand (W + alpha / r * B A), and ``LLM2Vec.get_pooling``'s formulas on a
left-padded batch whose instruction tokens are attended to but not pooled (``embed_mask``)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import modalities
from modalities.cxr.llm2vec import load_llm2vec, tiny_decoder
from modalities.cxr.llm2vec_release import embed_mask_from_lengths
from tasks.cli import main as cli_main

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def decoder_config(model_type):
    d = tiny_decoder(model_type, vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     intermediate_size=48)
    if model_type == "gemma":
        d.update(head_dim=8, tie_word_embeddings=True)
    d.update(bos_token_id=1, eos_token_id=2)
    return transformers.AutoConfig.for_model(d.pop("model_type"), **d)


def write_adapter(base_model, folder, base_name, seed):
    """A peft LoRA adapter on the base (bidirectional) model, as LLM2Vec's training scripts save it."""
    torch.manual_seed(seed)
    lora = peft.get_peft_model(base_model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    lora.save_pretrained(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": base_name}))
    lora.unload()  # leave base_model as it was


def write_release(root, model_type="llama"):
    """base/ (the decoder, XForCausalLM layout), mntp/ (its config.json + the MNTP adapter naming
    base/), sup/ (the supervised adapter + llm2vec_config.json), as the HF releases are laid out."""
    cfg = decoder_config(model_type)
    torch.manual_seed(0)
    causal = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    causal.save_pretrained(root / "base")
    (root / "mntp").mkdir()
    (root / "mntp" / "config.json").write_text((root / "base" / "config.json").read_text())
    base_model = transformers.AutoModel.from_config(cfg)
    base_model.load_state_dict(causal.model.state_dict())
    write_adapter(base_model, root / "mntp", str(root / "base"), seed=1)
    write_adapter(base_model, root / "sup", f"McGill-NLP/LLM2Vec-tiny-{model_type}-mntp", seed=2)
    (root / "sup" / "llm2vec_config.json").write_text(json.dumps(
        {"pooling_mode": "mean", "max_length": 512, "doc_max_length": 400, "skip_instruction": True}))
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """One release per decoder type, written once for the module (tests that change files copy it)."""
    made = {}

    def get(model_type="llama"):
        if model_type not in made:
            made[model_type] = write_release(tmp_path_factory.mktemp(model_type), model_type)
        return made[model_type]

    return get


def merge_by_hand(model, folder):
    """W <- W + lora_alpha / r * B @ A for every adapted linear layer (peft's LoRA merge formula)."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    ab = load_file(folder / "adapter_model.safetensors")
    with torch.no_grad():
        for key, a in ab.items():
            if ".lora_A." in key:
                name = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                b = ab[key.replace("lora_A", "lora_B")]
                model.get_submodule(name).weight += cfg["lora_alpha"] / cfg["r"] * (b @ a)


def upstream_hidden(root, ids, attention_mask, adapters=("mntp", "sup")):
    """LLM2Vec.from_pretrained + <Model>BiModel.forward re-derived on transformers' own model."""
    model = transformers.AutoModel.from_pretrained(root / "base", attn_implementation="eager").eval()
    for name in adapters:
        merge_by_hand(model, root / name)
    for m in model.modules():  # ModifiedLlamaAttention & co.: is_causal = False
        if hasattr(m, "is_causal"):
            m.is_causal = False
    # LlamaBiModel._update_causal_mask: a causal mask of zeros, padded keys filled with the dtype's min
    pad = attention_mask[:, None, None, :].eq(0).expand(-1, 1, ids.shape[1], -1)
    mask4d = torch.zeros(pad.shape).masked_fill(pad, torch.finfo(torch.float32).min)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask4d).last_hidden_state


def upstream_pool(h, attention_mask, embed_mask, mode, input_ids=None, bos=1, skip_instruction=True):
    """LLM2Vec.get_pooling (left padding), re-derived."""
    seq_lengths = (embed_mask if skip_instruction else attention_mask).sum(-1)
    if mode == "mean":
        return torch.stack([h[i, -n:].mean(0) for i, n in enumerate(seq_lengths)])
    if mode == "weighted_mean":
        w = torch.zeros(h.shape[:2])
        for i, n in enumerate(seq_lengths):
            w[i, -n:] = torch.arange(n) + 1
            w[i] /= w[i].sum().clamp(min=1e-9)
        return (h * w.unsqueeze(-1)).sum(1)
    if mode == "eos_token":
        return h[:, -1]
    if mode == "bos_token":
        return h[input_ids == bos]
    raise ValueError(mode)


def left_padded_batch(instr_lens=(3, 0, 2), text_lens=(6, 4, 2), seed=0):
    """BOS + instruction + text, left-padded (pad = eos, as LLM2Vec sets it); embed_mask covers the text."""
    g = torch.Generator().manual_seed(seed)
    rows = [[1] + torch.randint(5, 64, (i + t,), generator=g).tolist() for i, t in zip(instr_lens, text_lens, strict=True)]
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), 2)
    attn = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r):] = torch.tensor(r)
        attn[b, T - len(r):] = 1
    return ids, attn, embed_mask_from_lengths(attn, torch.tensor(text_lens)).long()


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "gemma"])
def test_release_with_mntp_and_supervised_adapters_matches_llm2vec(release, model_type):
    root = release(model_type)
    ids, attn, embed = left_padded_batch()
    ref = upstream_pool(upstream_hidden(root, ids, attn), attn, embed, "mean")
    (root / "mntp" / "llm2vec.json").write_text(json.dumps({"adapters": ["../sup"]}))
    enc = modalities.load_encoder(root / "mntp")
    (root / "mntp" / "llm2vec.json").unlink()
    with torch.no_grad():
        ours = enc.encode(ids, attn, embed_mask=embed)
    assert (ours - ref).abs().max() < 1e-4
    # the adapters change the function: without them the same batch pools elsewhere
    bare = upstream_pool(upstream_hidden(root, ids, attn, adapters=()), attn, embed, "mean")
    assert (bare - ref).abs().max() > 1e-3
    # meta says what was applied, in order, and where the pooling came from
    meta = enc.meta
    assert [a["path"] for a in meta["adapters"]] == [str(root / "mntp"), str(root / "sup")]
    assert all(a["merged"] for a in meta["adapters"]) and meta["base_weights"] == str(root / "base")
    assert meta["adapters"][1]["base_model_name_or_path"] == f"McGill-NLP/LLM2Vec-tiny-{model_type}-mntp"
    assert meta["pooling"] == "mean" and meta["llm2vec_config"]["file"].endswith("sup/llm2vec_config.json")
    # tessera import --check runs the same re-derivation from the folder's own files
    assert modalities.hub.check_parity(root / "mntp", enc) < 1e-4


def test_every_pooling_mode_and_instruction_skipping_match_llm2vec(release):
    root = release()
    ids, attn, embed = left_padded_batch()
    h = upstream_hidden(root, ids, attn)
    enc = load_llm2vec(root / "mntp", [root / "sup"])
    for mode in ("mean", "weighted_mean", "eos_token", "bos_token"):
        enc.pooler = modalities.backbone.create_pooler({"eos_token": "eos", "bos_token": "bos"}.get(mode, mode), 32)
        enc.config.pooling = {"eos_token": "eos", "bos_token": "bos"}.get(mode, mode)
        with torch.no_grad():
            ours = enc.encode(ids, attn, embed_mask=embed)
            whole = enc.encode(ids, attn)
        assert (ours - upstream_pool(h, attn, embed, mode, ids)).abs().max() < 1e-4, mode
        if mode in ("mean", "weighted_mean"):  # instruction tokens are excluded from the mean
            assert (ours - whole).abs().max() > 1e-3
            assert (whole - upstream_pool(h, attn, embed, mode, ids, skip_instruction=False)).abs().max() < 1e-4
    assert load_llm2vec(root / "mntp", [root / "sup"], pooling="eos_token").config.pooling == "eos"


def test_left_and_right_padding_pool_alike(release):
    root = release()
    ids, attn, embed = left_padded_batch()
    enc = load_llm2vec(root / "mntp", [root / "sup"], pooling="weighted_mean")
    lengths = attn.sum(1)
    right_ids, right_attn, right_embed = (torch.zeros_like(x) for x in (ids, attn, embed))
    for b, n in enumerate(lengths):
        for src, dst in ((ids, right_ids), (attn, right_attn), (embed, right_embed)):
            dst[b, :n] = src[b, -n:]
    with torch.no_grad():
        left = enc.encode(ids, attn, embed_mask=embed)
        right = enc.encode(right_ids, right_attn, embed_mask=right_embed)
    assert (left - right).abs().max() < 1e-5


def test_half_precision_loading_keeps_the_release_dtype(release):
    root = release()
    ids, attn, embed = left_padded_batch()
    ref = upstream_pool(upstream_hidden(root, ids, attn), attn, embed, "mean")
    for dtype in ("bfloat16",):  # float16 takes the same path (measured by hand: cosine > 0.99 too)
        enc = load_llm2vec(root / "mntp", [root / "sup"], dtype=dtype)
        assert {p.dtype for p in enc.parameters()} == {getattr(torch, dtype)} and enc.meta["dtype"] == dtype
        with torch.no_grad():
            ours = enc.encode(ids, attn, embed_mask=embed).float()
        assert F.cosine_similarity(ours, ref).min() > 0.99


def test_unmerged_last_adapter_stays_trainable_and_meta_says_so(release):
    root = release()
    enc = load_llm2vec(root / "mntp", [root / "sup"], merge=False)
    assert enc.has_lora and [a["merged"] for a in enc.meta["adapters"]] == [True, False]
    ids, attn, embed = left_padded_batch()
    ref = upstream_pool(upstream_hidden(root, ids, attn), attn, embed, "mean")
    with torch.no_grad():
        assert (enc.encode(ids, attn, embed_mask=embed) - ref).abs().max() < 1e-4


def test_adapter_of_another_base_is_refused_naming_it(release, tmp_path):
    root = release()
    other = decoder_config("llama")
    other.hidden_size, other.intermediate_size = 48, 64
    write_adapter(transformers.AutoModel.from_config(other), tmp_path / "wide", "org/wide-llama", seed=3)
    with pytest.raises(ValueError, match=r"wide: this adapter does not fit.*trained on 'org/wide-llama': layers\.0\.mlp"):
        load_llm2vec(root / "mntp", [tmp_path / "wide"])


def test_release_folders_that_cannot_load_say_why(release, tmp_path, capsys):
    import shutil

    root = shutil.copytree(release(), tmp_path / "copy")
    cfg = json.loads((root / "mntp" / "adapter_config.json").read_text())
    (root / "mntp" / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "org/not-here"}))
    capsys.readouterr()
    assert cli_main(["import", str(root / "mntp"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'org/not-here' is not on this machine" in err[0]
    (root / "sup" / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "cls_pooling"}))
    with pytest.raises(ValueError, match="pooling_mode 'cls_pooling'"):
        load_llm2vec(root / "mntp", [root / "sup"], base_model=root / "base")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_llm2vec(root / "base", [root / "nothing"])


# --- LLM2Vec4CXR: the latent-attention pooler inside model.safetensors -------------------------
def test_llm2vec4cxr_latent_attention_pooler_loads_from_the_weights_file(tmp_path):
    cfg = decoder_config("llama")
    torch.manual_seed(0)
    bi = transformers.AutoModel.from_config(cfg).eval()  # LlamaBiModel's keys: no "model." prefix, no lm_head
    D, L = cfg.hidden_size, 16
    mha = torch.nn.MultiheadAttention(D, 8, batch_first=True)
    mlp = torch.nn.Sequential(torch.nn.Linear(D, D), torch.nn.GELU(), torch.nn.Linear(D, D))
    latents = torch.randn(L, D)
    pooler = {"latent_attn.latents": latents,
              **{f"latent_attn.multihead_attn.{k}": v for k, v in mha.state_dict().items()},
              **{f"latent_attn.mlp.{k}": v for k, v in mlp.state_dict().items()}}
    folder = tmp_path / "llm2vec4cxr"
    bi.save_pretrained(folder)
    save_file({**load_file(folder / "model.safetensors"), **pooler}, folder / "model.safetensors")
    (folder / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "latent_attention", "max_length": 512}))
    enc = modalities.load_encoder(folder)
    assert enc.config.pooling == "latent_attention" and "latent_attn" in enc.meta["pooler"]
    assert "lm_head.weight" in enc.meta["filled"]
    ids, attn, embed = left_padded_batch()
    ref_model = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    for m in ref_model.modules():
        if hasattr(m, "is_causal"):
            m.is_causal = False
    pad = attn[:, None, None, :].eq(0).expand(-1, 1, ids.shape[1], -1)
    with torch.no_grad():
        h = ref_model(input_ids=ids, attention_mask=torch.zeros(pad.shape).masked_fill(pad, -3.4e38)).last_hidden_state
        # LatentAttentionPooling, one sample at a time over its last sum(embed_mask) tokens
        ref = []
        for i, n in enumerate(embed.sum(1)):
            tokens = h[i, -n:].unsqueeze(0)
            o, _ = mha(tokens, latents[None], latents[None])
            ref.append(mlp(o).mean(1).squeeze(0))
        ours = enc.encode(ids, attn, embed_mask=embed)
    assert (ours - torch.stack(ref)).abs().max() < 1e-4
    assert modalities.hub.check_parity(folder, enc) < 1e-4


# --- export: tessera export SRC OUT --format llm2vec, re-loaded by transformers + peft -------------
def reload_with_transformers_and_peft(out, ids, attn):
    """What LLM2Vec.from_pretrained(out, peft_model_name_or_path=out/"adapter", merge_peft=True) computes."""
    model = transformers.AutoModel.from_pretrained(out, attn_implementation="eager").eval()
    model = peft.PeftModel.from_pretrained(model, str(out / "adapter")).merge_and_unload()
    for m in model.modules():
        if hasattr(m, "is_causal"):
            m.is_causal = False
    pad = attn[:, None, None, :].eq(0).expand(-1, 1, ids.shape[1], -1)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=torch.zeros(pad.shape).masked_fill(pad, -3.4e38)).last_hidden_state
    mode = json.loads((out / "adapter" / "llm2vec_config.json").read_text())["pooling_mode"]
    return upstream_pool(h, attn, attn, mode, ids)


def test_export_llm2vec_reloads_in_transformers_and_peft(tmp_path, capsys):
    from modalities.cxr import LLM2VecConfig, LLM2VecEncoder
    from tasks.cxr import export_tower

    torch.manual_seed(0)
    enc = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=64), lora_r=4, pooling="weighted_mean")).eval()
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ids, attn, _ = left_padded_batch()
    with torch.no_grad():
        ours = enc.encode(ids, attn)
    modalities.save_encoder(enc, tmp_path / "unmerged")  # a LoRA still unmerged in the folder
    export_tower(enc, tmp_path / "trained")  # a training run's export: merged weights + adapter/
    for src in ("unmerged", "trained"):
        out = tmp_path / f"{src}-llm2vec"
        assert cli_main(["export", str(tmp_path / src), str(out), "--format", "llm2vec"]) == 0
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        assert (reload_with_transformers_and_peft(out, ids, attn) - ours).abs().max() < 1e-5, src
        back = load_llm2vec(out, [out / "adapter"])
        with torch.no_grad():
            assert (back.encode(ids, attn) - ours).abs().max() < 1e-5
    modalities.save_encoder(modalities.create_encoder("bert-tiny"), tmp_path / "bert")
    capsys.readouterr()
    assert cli_main(["export", str(tmp_path / "bert"), str(tmp_path / "x"), "--format", "llm2vec"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes LLM2Vec encoders" in err[0]


# --- text in: upstream's instruction / embed_mask preparation -----------------------------------
def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<s>", "</s>", "<unk>", "retrieve", "similar", "reports:", "small", "left", "effusion", "no",
             "pneumothorax"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")


def test_instruction_inputs_pool_only_the_text_left_padded(release):
    from modalities.cxr.llm2vec_release import llm2vec_inputs

    tok = tiny_tokenizer()
    batch = llm2vec_inputs(tok, ["small left effusion", "no pneumothorax"], instruction="retrieve similar reports:")
    # <s> + 3 instruction words + the text; the shorter row padded on the left with EOS (LLM2Vec's pad)
    assert batch["input_ids"].tolist() == [[1, 4, 5, 6, 7, 8, 9], [2, 1, 4, 5, 6, 10, 11]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [0] + [1] * 6]
    assert batch["embed_mask"].tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]]
    eos = llm2vec_inputs(tok, ["no pneumothorax"], pooling="eos_token")  # " </s>" joins the text
    assert eos["input_ids"].tolist() == [[1, 10, 11, 2]] and eos["embed_mask"].tolist() == [[0, 1, 1, 1]]
    assert tok.padding_side == "right"  # the caller's tokenizer is left as it was
    enc = load_llm2vec(release() / "mntp", [release() / "sup"])
    with torch.no_grad():
        got = enc.encode(batch["input_ids"], batch["attention_mask"], embed_mask=batch["embed_mask"])
    h = upstream_hidden(release(), batch["input_ids"], batch["attention_mask"])
    assert (got - upstream_pool(h, batch["attention_mask"], batch["embed_mask"], "mean")).abs().max() < 1e-4


def test_sharded_base_weights_load_like_one_file(release, tmp_path):
    root = release()
    causal = transformers.AutoModelForCausalLM.from_pretrained(root / "base")
    causal.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids, attn, embed = left_padded_batch()
    one, sharded = load_llm2vec(root / "base"), load_llm2vec(tmp_path / "sharded")
    with torch.no_grad():
        assert torch.equal(one.encode(ids, attn, embed_mask=embed), sharded.encode(ids, attn, embed_mask=embed))


def with_named_lora(enc, cfg) -> None:
    """``enc``'s decoder wrapped by peft with a LoRA adapter named "llm2clip" (LLM2CLIP4CXR's name),
    its B matrices drawn non-zero so that the delta shows."""
    import peft

    enc.model = peft.get_peft_model(enc.model, cfg)
    enc.model.add_adapter("llm2clip", cfg)
    enc.model.set_adapter("llm2clip")
    with torch.no_grad():
        for n, p in enc.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)


def test_llm2clip_text_lora_deltas_merge_into_the_text_tower():
    """LLM2CLIP4CXR's CLIP stage: peft adapter "llm2clip" added beside the idle "default" on the
    LLM2Vec core, saved as text.model.model.base_model.model.*.lora_{A,B}.<adapter>.weight."""
    from modalities.cxr import LLM2VecConfig, LLM2VecEncoder
    from modalities.cxr.llm2vec_release import merge_lora_deltas

    torch.manual_seed(0)
    enc = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=64))).eval()
    fresh = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=64))).eval()
    fresh.load_state_dict(enc.state_dict())
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    with_named_lora(enc, cfg)
    ids, attn, _ = left_padded_batch()
    with torch.no_grad():
        want = enc.encode(ids, attn)
    ckpt = {f"text.model.model.{k}": v for k, v in enc.model.state_dict().items() if "lora_" in k}
    summary = merge_lora_deltas(fresh, ckpt, lora_alpha=8)
    assert summary["merged_modules"] == 8 and summary["other_adapters_not_merged"] == {"default": 16}
    with torch.no_grad():
        assert (fresh.encode(ids, attn) - want).abs().max() < 1e-5
    with pytest.raises(ValueError, match="no LoRA pairs of adapter 'clip'"):
        merge_lora_deltas(fresh, ckpt, adapter_name="clip")


def test_llm2clip_lora_alpha_is_read_from_the_adapters_own_config_and_reported(tmp_path):
    """lora_alpha is not in an LLM2CLIP4CXR checkpoint: read from the adapter_config.json peft wrote for the
    "llm2clip" adapter (save_pretrained puts it under llm2clip/), else LLM2CLIP4CXR's training default 32,
    each reported with its source."""
    import json

    from modalities.cxr import LLM2VecConfig, LLM2VecEncoder
    from modalities.cxr.llm2vec_release import merge_lora_deltas

    torch.manual_seed(0)
    enc = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=64))).eval()
    base_state = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj"])
    with_named_lora(enc, cfg)
    enc.model.save_pretrained(str(tmp_path / "adapter"), selected_adapters=["llm2clip"])
    assert json.loads((tmp_path / "adapter" / "llm2clip" / "adapter_config.json").read_text())["lora_alpha"] == 12
    ids, attn, _ = left_padded_batch()
    with torch.no_grad():
        want = enc.encode(ids, attn)
    ckpt = {f"text.model.model.{k}": v for k, v in enc.model.state_dict().items() if "lora_" in k}

    def fresh():
        e = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=64))).eval()
        e.load_state_dict(base_state)
        e.meta = {}
        return e

    read = fresh()
    summary = merge_lora_deltas(read, ckpt, adapter_config=tmp_path / "adapter")
    assert summary["lora_alpha"] == 12 and summary["lora_alpha_source"].endswith("llm2clip/adapter_config.json: lora_alpha")
    assert read.meta["llm2clip_lora"] == summary
    with torch.no_grad():
        assert (read.encode(ids, attn) - want).abs().max() < 1e-5
    assumed = fresh()
    summary = merge_lora_deltas(assumed, ckpt)
    assert summary["lora_alpha"] == 32 and summary["lora_alpha_source"].startswith("assumed")
    with torch.no_grad():  # 32 instead of 12: visibly not the trained model
        assert (assumed.encode(ids, attn) - want).abs().max() > 1e-4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    with pytest.raises(ValueError, match="r=8, the checkpoint's LoRA pairs have rank 4"):
        merge_lora_deltas(fresh(), ckpt, adapter_config=tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json there"):
        merge_lora_deltas(fresh(), ckpt, adapter_config=tmp_path / "missing")
