"""ELECTRA: replaced-token labels, gradient flow, shared embeddings, the exported discriminator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalities import TokenEncoder, TokenEncoderConfig, load_encoder
from modalities.backbone.electra import (
    ElectraModel,
    backbone_flops,
    corrupt,
    generator_config,
    mlm_training_flops,
    sample_tokens,
)
from tasks.electra import ElectraSystem

MASK = 4


def tiny_encoder(**kw) -> TokenEncoder:
    cfg = dict(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
               max_position_embeddings=32, hidden_dropout=0.0, attention_dropout=0.0)
    return TokenEncoder(TokenEncoderConfig(**{**cfg, **kw}))


def batch(seed: int = 0, B: int = 3, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (B, T), generator=g)
    attention = torch.ones(B, T, dtype=torch.bool)
    attention[0, 9:] = False  # one padded row
    masked = (torch.rand(B, T, generator=g) < 0.4) & attention
    masked[:, 0] = False
    masked[:, 1] = True  # every row has a masked position
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return {"input_ids": ids.masked_fill(masked, MASK), "attention_mask": attention, "labels": labels}, ids, masked


def system(**kw) -> ElectraSystem:
    torch.manual_seed(0)
    return ElectraSystem(tiny_encoder(**kw), generator_fraction=0.25, mask_token_id=MASK)


def test_a_sampled_token_equal_to_the_original_is_labelled_original():
    original = torch.tensor([[5, 6, 7, 8]])
    masked = torch.tensor([[False, True, True, True]])
    corrupted, replaced = corrupt(original, masked, torch.tensor([6, 9, 8]))  # 6 == original, 9 and 8 differ
    assert corrupted.tolist() == [[5, 6, 9, 8]]
    assert replaced.tolist() == [[False, False, True, False]]  # position 3: sample 8 equals original 8


def test_the_model_labels_a_generator_that_always_proposes_the_original_as_all_original():
    s = system()
    b, ids, masked = batch()
    # a generator certain of token 7; make token 7 the original at half the masked positions
    with torch.no_grad():
        s.model.generator.head.bias.fill_(-1e4)
        s.model.generator.head.bias[7] = 1e4
    original = ids.clone()
    where = masked.nonzero()
    original[where[::2, 0], where[::2, 1]] = 7
    b["labels"] = torch.where(masked, original, torch.full_like(original, -100))
    out = s(b)
    expected = masked & (original != 7)
    assert out["replaced"].tolist() == expected.tolist()
    assert 0 < int(expected.sum()) < int(masked.sum())


def test_replacements_are_drawn_from_the_generators_softmax():
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0)), -1e4]]).expand(20000, 3)  # p = 1/4, 3/4, 0
    drawn = sample_tokens(logits, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(drawn, minlength=3).float() / len(drawn)
    torch.testing.assert_close(share, torch.tensor([0.25, 0.75, 0.0]), atol=0.015, rtol=0)


def test_gradients_reach_the_generator_and_the_discriminator():
    s = system()
    b, _, _ = batch()
    s(b)["loss"].backward()
    m = s.model
    for name, module in [("generator backbone", m.generator.backbone), ("generator head", m.generator.head.dense),
                         ("generator projection", m.generator.project), ("discriminator", m.discriminator.backbone),
                         ("discriminator head", m.rtd_head)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_no_gradient_flows_through_the_sampled_replacements():
    s = system()
    b, _, _ = batch()
    s(b)["rtd_loss"].backward()  # the discriminator's loss alone
    gen = s.model.generator
    for p in [*gen.backbone.parameters(), *gen.project.parameters(), *gen.head.dense.parameters(), gen.head.bias]:
        assert p.grad is None or float(p.grad.abs().sum()) == 0.0
    assert s.model.discriminator.embeddings.weight.grad.abs().sum() > 0  # the shared table learns from it


def test_generator_and_discriminator_share_one_embedding_parameter():
    s = system()
    m = s.model
    shared = m.discriminator.embeddings.weight
    assert m.generator.frontend.word_embeddings.weight is shared
    assert m.generator.head.embedding.weight is shared  # the generator's decoder is tied to it too
    assert m.generator.frontend.position_embeddings.weight is m.discriminator.frontend.position_embeddings.weight
    assert sum(p is shared for p in s.parameters()) == 1  # the optimizer sees it once
    assert m.generator_config.hidden_size == 8 and m.generator_config.num_layers == 2  # 1/4 of 32, same depth
    opt = torch.optim.SGD(s.parameters(), lr=1.0)
    b, _, _ = batch()
    s(b)["loss"].backward()
    opt.step()
    assert m.generator.frontend.word_embeddings.weight is m.discriminator.embeddings.weight


def test_the_exported_discriminator_loads_and_gives_the_hidden_states_it_gave_inside_the_system(tmp_path):
    s = system(position="alibi", activation="geglu", norm="pre")
    opt = torch.optim.AdamW(s.parameters(), lr=1e-2)
    b, _, _ = batch()
    for _ in range(2):  # move the weights off their initialisation
        s(b)["loss"].backward()
        opt.step()
        opt.zero_grad()
    s.eval()
    folder = s.export_encoder(tmp_path / "enc", modality="code")
    loaded = load_encoder(folder).eval()
    ids, attention = b["input_ids"], b["attention_mask"]
    with torch.no_grad():
        inside = s.encoder(input_ids=ids, attention_mask=attention).last_hidden_state
        outside = loaded(input_ids=ids, attention_mask=attention).last_hidden_state
    torch.testing.assert_close(outside, inside)
    assert loaded.meta["pretraining"] == "electra" and loaded.meta["modality"] == "code"


def test_generator_width_is_the_fraction_and_flops_count_the_generator():
    cfg = tiny_encoder().config
    g = generator_config(cfg, 1 / 3)
    assert (g.hidden_size, g.num_heads, g.num_layers) == (11, 1, 2)  # round(32 / 3), one head
    lengths = torch.tensor([10, 7])
    # one layer by hand: 4 projections + 2-matrix FFN per token, scores + weighted sum per token pair
    one = generator_config(cfg, 1.0, num_layers=1)
    assert backbone_flops(one, lengths) == 17 * (2 * 4 * 32 * 32 + 2 * 2 * 32 * 64) + (100 + 49) * 4 * 32
    m = ElectraModel(tiny_encoder())
    assert m.training_flops(lengths, 4) > mlm_training_flops(cfg, lengths, 4)


def test_a_system_without_a_mask_id_says_which_option_to_set():
    s = ElectraSystem(tiny_encoder())

    class NoData:
        datamodule = None

    s._trainer = NoData()  # setup reads the data module through the trainer
    with pytest.raises(ValueError, match="mask_token_id"):
        ElectraSystem.setup(s, "fit")


def test_the_discriminator_head_starts_at_the_prior_share_of_replaced_tokens():
    s = system()
    b, _, _ = batch()
    out = s(b)
    prob = torch.sigmoid(out["rtd_logits"].detach()[b["attention_mask"]])
    assert abs(float(prob.mean()) - 0.15) < 0.02  # not 1/2: no content-free first gradient
    assert ElectraModel(tiny_encoder(), rtd_prior=None).rtd_head.out.bias.item() == 0.0
    with pytest.raises(ValueError, match="prior"):
        ElectraModel(tiny_encoder(), rtd_prior=1.5)


def test_token_states_do_not_collapse_while_the_discriminator_learns_only_the_base_rate():
    # labels with no content (15 % replaced at random): all there is to learn is the rate; from a
    # head at 1/2, AdamW writes that constant into every token state (they collapse to one
    # direction), which is what kept the discriminator at "all original" on code
    def mean_cosine_after_training(prior):
        torch.manual_seed(0)
        m = ElectraModel(tiny_encoder(), rtd_prior=prior)
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            ids = torch.randint(5, 50, (4, 16), generator=g)
            attention = torch.ones_like(ids, dtype=torch.bool)
            labels = (torch.rand(ids.shape, generator=g) < 0.15).float()
            loss = F.binary_cross_entropy_with_logits(m.replaced_logits(ids, attention), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            h = F.normalize(m.discriminator(input_ids=ids, attention_mask=attention).last_hidden_state.flatten(0, 1), dim=-1)
        return float((h @ h.T).mean())

    assert mean_cosine_after_training(None) > 0.95  # the failure this guards against
    assert mean_cosine_after_training(0.15) < 0.7


def test_building_the_model_keeps_the_encoders_own_embedding_table():
    enc = tiny_encoder()
    before = enc.embeddings.weight.detach().clone()
    m = ElectraModel(enc)
    torch.testing.assert_close(m.discriminator.embeddings.weight.detach(), before)  # not re-drawn by the generator head's init


def bench_electra():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_electra", Path(__file__).resolve().parents[1] / "scripts" / "bench_electra.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_headline_is_the_mean_over_tasks_within_each_seed_then_over_seeds():
    bench = bench_electra()
    table = {"a": {"mlm": {"per_seed": {0: 0.2, 1: 0.4, 2: 0.9}}, "electra": {"per_seed": {0: 0.5}}},
             "b": {"mlm": {"per_seed": {0: 0.6, 1: 0.8}}, "electra": {"per_seed": {0: 0.7}}}}
    means = bench.task_means(table)
    assert means["mlm"]["per_seed"] == {0: 0.4, 1: 0.6}  # seed 2 lacks task b: left out, not averaged over one task
    assert means["mlm"]["mean"] == pytest.approx(0.5)
    assert means["mlm"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert means["electra"] == {"mean": 0.6, "std": None, "per_seed": {0: 0.6}, "tasks": 2}
    assert "scratch" not in means


def test_the_benchmark_plots_each_encoder_at_its_pretraining_cpu_seconds():
    bench = bench_electra()
    assert bench.pretraining_seconds({"pretraining": {"mlm": {"cpu_seconds": 259.3}, "electra": {"cpu_seconds": 372}}}) == {
        "scratch": 0.0, "mlm": 259.3, "electra": 372.0}
    assert set(bench.TASKS) == {"variable_misuse", "wrong_binary_operator", "swapped_operands", "function_docstring",
                                "exception_type", "variable_misuse_repair"}  # the six code tasks


MISUSE_CLEAN = "def scale(width, height):\n    area = width * height\n    return area + width\n"


def misuse_rows():
    """A clean function and the same with one use misused (width -> height), in the benchmark's rows."""
    s = MISUSE_CLEAN.rindex("width")
    buggy = MISUSE_CLEAN[:s] + "height" + MISUSE_CLEAN[s + len("width"):]
    return [{"source": MISUSE_CLEAN, "label": 0, "site": [s, s + len("width")]},
            {"source": buggy, "label": 1, "site": [s, s + len("height")]}]


@pytest.fixture(scope="module")
def code_tokenizer():
    from modalities.code.tokenizer import CodeTokenizer

    return CodeTokenizer.train([MISUSE_CLEAN * 3, misuse_rows()[1]["source"] * 3], 120)


def test_zero_shot_use_sites_are_the_subwords_of_each_variable_use(code_tokenizer):
    bench = bench_electra()
    ids, uses = bench.use_sites(code_tokenizer, MISUSE_CLEAN, 64)
    assert [u for u, _ in uses] == sorted(uses_spans := [(m, m + len(w)) for w, m in (
        ("width", MISUSE_CLEAN.index("width *")), ("height", MISUSE_CLEAN.index("height\n")),
        ("area", MISUSE_CLEAN.index("area +")), ("width", MISUSE_CLEAN.rindex("width")))])
    enc = code_tokenizer.encode(MISUSE_CLEAN)
    for (s, e), positions in uses:  # position k of ids is subword k - 1 ([CLS] first), which starts inside the use
        assert ids[positions].tolist() == enc.ids[positions - 1].tolist()
        assert all(s <= enc.spans[k - 1, 0] < e for k in positions)
    assert len(uses_spans) == 4


class SiteDetector(torch.nn.Module):
    """A stand-in discriminator: "replaced" (logit +4) at the last position holding one of ``ids``, -4 elsewhere."""

    def __init__(self, replaced_ids: list[int]):
        super().__init__()
        self.replaced_ids = torch.tensor(replaced_ids)

    def replaced_logits(self, ids, mask):
        hit = torch.isin(ids, self.replaced_ids) & mask
        last = torch.where(hit, torch.arange(ids.shape[1]), -1).max(1).values  # (B,)
        return torch.where(torch.arange(ids.shape[1]) == last[:, None], 4.0, -4.0)


def test_zero_shot_scores_a_function_by_its_most_replaced_use_and_locates_the_bug(code_tokenizer):
    bench = bench_electra()
    rows = misuse_rows()
    enc, at = code_tokenizer.encode(MISUSE_CLEAN), MISUSE_CLEAN.index("height")
    height = [int(i) for i, (s, _) in zip(enc.ids, enc.spans, strict=True) if at <= s < at + len("height")]  # its subwords
    scores = bench.misuse_scores(SiteDetector(height), code_tokenizer, rows, 64)
    assert [x["label"] for x in scores] == [0, 1]
    assert scores[1]["use_score"] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())  # "replaced" means > 1/2
    assert scores[1]["located"]  # the buggy function's top use is its bug site: the misused height
    assert not scores[0]["located"]  # the clean one's last height is in width * height, not at the site
    none = bench.misuse_scores(SiteDetector([code_tokenizer.cls_id]), code_tokenizer, rows, 64)
    assert [x["use_score"] for x in none] == pytest.approx([torch.sigmoid(torch.tensor(-4.0)).item()] * 2)  # [CLS] is no use
    assert [x["any_token_score"] for x in none] == pytest.approx([torch.sigmoid(torch.tensor(-4.0)).item()] * 2)


def test_the_benchmarks_electra_recipe_reaches_only_the_electra_fit_and_the_protocol_is_one_for_all():
    bench = bench_electra()
    recipe = {"lr": 1e-3, "generator_fraction": 0.5, "mask_ratio": 0.25, "warmup": 0.1}
    el = bench.fit_command("electra", 100, bench.ROOT / "x", recipe)
    mlm = bench.fit_command("mlm", 100, bench.ROOT / "y", recipe)

    def value(argv, flag):
        return argv[argv.index(flag) + 1]

    assert value(el, "--model.init_args.lr") == "0.001" and value(el, "--model.init_args.generator_fraction") == "0.5"
    assert value(el, "--data.init_args.mask_ratio") == "0.25" and value(el, "--model.init_args.rtd_prior") == "0.25"
    assert value(mlm, "--model.init_args.lr") == str(bench.LR) and value(mlm, "--data.init_args.mask_ratio") == "0.15"
    assert "--model.init_args.generator_fraction" not in mlm
    proto = bench.finetune_protocol(400, 100, 2000)
    assert (value(proto, "--steps"), value(proto, "--val-every"), value(proto, "--max-examples")) == ("400", "100", "2000")
    assert value(bench.FINETUNE, "--steps") == "150"  # the default is left alone
