"""CXR-BERT (BiomedVLP-CXR-BERT-specialized layout) through load_encoder / tessera import: every hidden
state and the projection head against transformers' BertForMaskedLM + the head's formulas."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import ragged_mask

import modalities
from modalities.backbone import ATTENTION
from tasks.cli import main as cli_main

transformers = pytest.importorskip("transformers")
COMMON = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")


def write_cxr_bert(folder, projection_size=16):
    """A random CXRBertModel saved as the release is: config.json (model_type cxr-bert, auto_map,
    projection_size) + pytorch_model.bin holding BertForMaskedLM's keys and cls_projection_head.*."""
    torch.manual_seed(0)
    mlm = transformers.BertForMaskedLM(transformers.BertConfig(**COMMON)).eval()
    P, D = projection_size, COMMON["hidden_size"]
    head = {"dense_to_hidden.weight": torch.randn(P, D) * 0.2, "dense_to_hidden.bias": torch.randn(P) * 0.1,
            "LayerNorm.weight": 1 + torch.randn(P) * 0.1, "LayerNorm.bias": torch.randn(P) * 0.1,
            "dense_to_output.weight": torch.randn(P, P) * 0.2, "dense_to_output.bias": torch.randn(P) * 0.1}
    state = {**mlm.state_dict(), **{f"cls_projection_head.{k}": v for k, v in head.items()}}
    state["bert.embeddings.position_ids"] = torch.arange(COMMON["max_position_embeddings"])[None]  # old releases
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    config = {**COMMON, "model_type": "cxr-bert", "architectures": ["CXRBertModel"], "projection_size": P,
              "auto_map": {"AutoConfig": "configuration_cxrbert.CXRBertConfig",
                           "AutoModel": "modeling_cxrbert.CXRBertModel"},
              "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"}
    (folder / "config.json").write_text(json.dumps(config))
    return mlm, head


def reference(mlm, head, ids, mask):
    """CXRBertModel.forward re-derived: BertForMaskedLM's hidden states, the head on [CLS]."""
    with torch.no_grad():
        hs = mlm(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
        x = F.gelu(F.linear(hs[-1][:, 0], head["dense_to_hidden.weight"], head["dense_to_hidden.bias"]))
        x = F.layer_norm(x, x.shape[-1:], head["LayerNorm.weight"], head["LayerNorm.bias"], eps=1e-12)
        return hs, F.linear(x, head["dense_to_output.weight"], head["dense_to_output.bias"])


@pytest.mark.parametrize("backend", ATTENTION.names())
def test_cxr_bert_hidden_states_and_projection_match_the_release_formulas(tmp_path, backend):
    mlm, head = write_cxr_bert(tmp_path / "cxr")
    mask = ragged_mask([11, 3, 7])
    ids = torch.randint(3, 99, mask.shape).masked_fill(~mask, 0)
    hs, proj = reference(mlm, head, ids, mask)
    enc = modalities.load_encoder(tmp_path / "cxr", attention_backend=backend)
    with torch.no_grad():
        out = enc(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ours = enc.encode(ids, mask)
    assert len(out.hidden_states) == 3
    for a, b in zip(out.hidden_states, hs, strict=True):
        assert (a - b)[mask].abs().max() < 1e-4
    assert ours.shape == (3, 16) and (ours - proj).abs().max() < 1e-4
    # upstream's get_projected_text_embeddings is the L2-normalised projection
    assert (F.normalize(ours, dim=1) - F.normalize(proj, dim=1)).abs().max() < 1e-4


def test_cxr_bert_meta_names_the_head_and_every_dropped_key(tmp_path):
    write_cxr_bert(tmp_path / "cxr")
    enc = modalities.load_encoder(tmp_path / "cxr")
    assert enc.meta["pooling"] == "cxr-bert-projection" and "cls_projection_head" in enc.meta["applied"]
    dropped = enc.meta["dropped"]
    assert "embeddings.position_ids" in dropped and any(k.startswith("cls.predictions.") for k in dropped)
    assert not any(k.startswith("cls_projection_head") for k in dropped)


def test_tessera_import_check_and_round_trip_keep_the_projection(tmp_path, capsys):
    mlm, head = write_cxr_bert(tmp_path / "cxr")
    assert cli_main(["import", str(tmp_path / "cxr"), str(tmp_path / "ts"), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "CXRBertEncoder" in printed and ": ok" in printed
    back = modalities.load_encoder(tmp_path / "ts")
    mask = ragged_mask([6, 2])
    ids = torch.randint(3, 99, mask.shape).masked_fill(~mask, 0)
    _, proj = reference(mlm, head, ids, mask)
    with torch.no_grad():
        assert (back.encode(ids, mask) - proj).abs().max() < 1e-4
    # the head is optional: another pooler by name pools the hidden states instead
    from modalities.cxr.cxr_bert import CXRBertConfig, CXRBertEncoder

    cfg = CXRBertConfig.from_dict({**back.config.to_dict(), "pooling": "mean"})
    plain = CXRBertEncoder(cfg).eval()
    plain.load_state_dict(back.state_dict())
    with torch.no_grad():
        assert plain.encode(ids, mask).shape == (2, 32)


def test_cxr_bert_bad_folders_say_what_is_wrong(tmp_path, capsys):
    write_cxr_bert(tmp_path / "cxr")
    cfg = json.loads((tmp_path / "cxr" / "config.json").read_text())
    (tmp_path / "cxr" / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "projection_size"}))
    with pytest.raises(ValueError, match="no projection_size"):
        modalities.load_encoder(tmp_path / "cxr")
    (tmp_path / "cxr" / "config.json").write_text(json.dumps(cfg))
    state = torch.load(tmp_path / "cxr" / "pytorch_model.bin", weights_only=True)
    state["cls_projection_head.extra.weight"] = torch.ones(2)
    torch.save(state, tmp_path / "cxr" / "pytorch_model.bin")
    with pytest.raises((KeyError, ValueError), match="cls_projection_head.extra.weight"):
        modalities.load_encoder(tmp_path / "cxr")
    torch.save({k: v for k, v in state.items() if not k.startswith("cls_projection_head")},
               tmp_path / "cxr" / "pytorch_model.bin")
    assert cli_main(["import", str(tmp_path / "cxr"), str(tmp_path / "ts")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no cls_projection_head" in err[0] and "Traceback" not in err[0]


def test_export_hf_of_cxr_bert_keeps_the_bert_body_and_names_the_dropped_head(tmp_path, capsys):
    mlm, _ = write_cxr_bert(tmp_path / "release")
    assert cli_main(["import", str(tmp_path / "release"), str(tmp_path / "ours")]) == 0
    capsys.readouterr()
    assert cli_main(["export", str(tmp_path / "ours"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert "projection" in capsys.readouterr().err  # the user is told what BertModel could not hold
    bert = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    ids, mask = torch.randint(5, 99, (3, 11)), ragged_mask([11, 4, 7])
    with torch.no_grad():
        got = bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        want = mlm.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert (got - want)[mask].abs().max() < 1e-5
