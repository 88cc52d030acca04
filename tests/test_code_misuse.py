"""Variable Misuse from the masked LM's own head (tasks.code_misuse, `tessera eval code-misuse`)."""

import json
import math

import pytest
import torch
from code_fixtures import write_run
from torch import nn

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import CodeTokenizer, extract_functions, generate, local_variables
from tasks.cli import main as tessera
from tasks.code_misuse import (
    STATISTICS,
    FunctionScore,
    MisuseScorer,
    UseScore,
    auroc,
    best_threshold,
    load_mlm,
    misuse_metrics,
    site_effect,
)
from tasks.text import MaskedLMSystem

FUNCS = [
    "def total_of(items, limit):\n    count = 0\n    for item in items:\n        if item > limit:\n"
    "            tally_mode_path = item * 2\n            count = count + tally_mode_path\n    return count\n",
    "def ratio(path, mode):\n    handle = open(path, mode)\n    data = handle.read()\n    return len(data) / 2\n",
    "def pick(key, table):\n    value = table[key]\n    if value is None:\n        value = key\n    return value\n",
]
TINY = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
            max_position_embeddings=128, attention_backend="unpadded")


@pytest.fixture(scope="module")
def tok():
    # tally_mode_path never seen in training: it falls into several subwords
    return CodeTokenizer.train([f.replace("def ", f"def v{i}_").replace("tally_mode_path", "x")
                                for i in range(20) for f in FUNCS], 300)


def test_local_variables_spans_and_uses():
    src = "def f(self, a, b):\n    c = a + b\n    return c * a + self.x\n"
    occ = local_variables(src)
    assert set(occ) == {"a", "b", "c"}  # self is never a candidate
    for name, spans in occ.items():
        assert all(src[s:e] == name for s, e, _ in spans)
    assert [u for _, _, u in occ["a"]] == [False, True, True]  # parameter, then two loads
    assert [u for _, _, u in occ["c"]] == [False, True]  # store, then load
    with pytest.raises(ValueError, match="one function"):
        local_variables("class A:\n    pass\n")


class Recorder(nn.Module):
    """A tiny encoder that keeps the ids it was given."""

    def __init__(self):
        super().__init__()
        self.inner = TokenEncoder(TokenEncoderConfig(**TINY))
        self.seen = []

    def forward(self, input_ids, attention_mask):
        self.seen.append((input_ids.clone(), attention_mask.clone()))
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


class FixedHead(nn.Module):
    """The same logits at every masked position, whatever the encoder says."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, h):  # (M, D) -> (M, V)
        return self.logits.expand(h.shape[0], -1)


def test_scorer_masks_every_use_and_scores_every_local(tok):
    src = FUNCS[0]
    enc = tok.encode(src)
    sub = {n: [int(enc.ids[k]) for k in range(len(enc)) if s <= enc.spans[k, 0] < enc.spans[k, 1] <= e]
           for n, spans in local_variables(src).items() for s, e, _ in spans[:1]}
    logits = torch.zeros(tok.vocab_size)
    logits[sub["count"][0]] = 5.0  # the head always wants "count"
    lp = logits.log_softmax(-1)
    encoder = Recorder()
    scorer = MisuseScorer(encoder, FixedHead(logits), tok, max_length=128, batch_size=3, precision="32")
    (fs,) = scorer.score([src])
    uses = [(s, e, n) for n, spans in local_variables(src).items() for s, e, u in spans if u]
    assert sorted((u.start, u.end, u.name) for u in fs.uses) == sorted(uses)

    def name_score(name, k):
        ids = sub[name][:k]
        return float(lp[ids].mean())

    for u in fs.uses:
        k = len(sub[u.name])
        others = {n: name_score(n, k) for n in sub if n != u.name}
        best = max(others, key=others.get)
        assert u.best == best and u.margin == pytest.approx(name_score(u.name, k) - others[best], abs=1e-5)
        assert (u.margin > 0) == (u.name == "count")
        assert u.evidence == pytest.approx(math.log(sum(math.exp(v - name_score(u.name, k)) for v in others.values())))
    assert fs.locals == len(sub)
    assert fs.suspect.name != "count" and fs.suspect.best == "count"
    assert len(sub["tally_mode_path"]) > 1  # a name of several subwords: all of them are masked
    # one masked sequence per use (batches of 3): only that use's subwords are masked
    rows = torch.cat([ids for ids, _ in encoder.seen])
    assert len(rows) == len(uses)
    plain = torch.tensor([tok.cls_id, *enc.ids.tolist(), tok.sep_id])
    for row, u in zip(rows, fs.uses, strict=True):  # uses come back in query order
        s, e = u.start, u.end
        masked = (row[: len(plain)] == tok.mask_id).nonzero()[:, 0] - 1
        want = [k for k in range(len(enc)) if s <= enc.spans[k, 0] < enc.spans[k, 1] <= e]
        assert masked.tolist() == want
        keep = torch.ones(len(plain), dtype=torch.bool)
        keep[torch.tensor(want) + 1] = False
        assert torch.equal(row[: len(plain)][keep], plain[keep])


def test_a_dedent_before_a_name_is_not_part_of_it(tok):
    """DEDENT's span is empty and starts where the next line's first name does: never masked, never a subword."""
    src = "def f(items, limit):\n    if limit:\n        count = 1\n    items.append(limit)\n    return count\n"
    enc = tok.encode(src)
    at = src.index("items.append")
    dedent = [k for k in range(len(enc)) if enc.spans[k, 0] == at and enc.spans[k, 1] == at]
    assert dedent  # the case under test exists
    encoder = Recorder()
    (fs,) = MisuseScorer(encoder, FixedHead(torch.zeros(tok.vocab_size)), tok, precision="32").score([src])
    rows = torch.cat([ids for ids, _ in encoder.seen])
    (row,) = [r for r, u in zip(rows, fs.uses, strict=True) if u.start == at]
    assert row[dedent[0] + 1] == enc.ids[dedent[0]]  # the DEDENT stays, only "items" is masked
    assert (row == tok.mask_id).sum() == len([k for k in range(len(enc)) if at <= enc.spans[k, 0] < enc.spans[k, 1] <= at + 5])


def test_scorer_skips_uses_past_max_length_and_functions_with_one_local(tok):
    long_src = FUNCS[0]
    n_tokens = len(tok.encode(long_src))
    scorer = MisuseScorer(Recorder(), FixedHead(torch.zeros(tok.vocab_size)), tok, max_length=12, precision="32")
    (fs,) = scorer.score([long_src])
    assert n_tokens > 10 and all(u.end <= int(tok.encode(long_src).spans[9, 1]) for u in fs.uses)
    (one,) = scorer.score(["def f(x):\n    y = 1\n    return 2\n"])  # x and y are never used
    assert one.uses == [] and one.statistic() == -math.inf and one.suspect is None
    wide = MisuseScorer(Recorder(), FixedHead(torch.zeros(tok.vocab_size)), tok, precision="32")
    broken, fine = wide.score(["def f(x:\n    return x\n", FUNCS[1]])  # skipped with its reason, not fatal
    assert broken.error and "parse" in broken.error and broken.uses == [] and fine.error is None and fine.uses
    assert misuse_metrics([broken, fine], [{"label": 1}, {"label": 0}], 0.0)["functions_not_parsed"] == 1
    with pytest.raises(ValueError, match="precision"):
        MisuseScorer(Recorder(), FixedHead(torch.zeros(3)), tok, precision="16")


def test_threshold_and_auroc():
    assert best_threshold([3.0, 2.0, -1.0, -2.0], [1, 1, 0, 0]) == pytest.approx(0.5)  # buggy above it
    assert best_threshold([1.0, 2.0], [0, 0]) == math.inf  # everything clean
    assert best_threshold([1.0, 2.0], [1, 1]) == 0.0  # everything buggy
    assert auroc([3.0, 2.0, -1.0], [1, 1, 0]) == 1.0
    assert auroc([3.0, 2.0, -1.0], [0, 0, 1]) == 0.0
    assert auroc([1.0, 1.0], [1, 0]) == 0.5
    assert math.isnan(auroc([1.0], [1]))


def test_misuse_metrics_follow_the_pointer_definitions():
    src = "def f(a, b):\n    return b + a\n"
    b_use, a_use = src.index("b +"), src.index("a\n")
    bug = {"label": 1, "source": src, "error_span": [b_use, b_use + 1], "target_spans": [[6, 7]]}  # "a" is right
    clean = {"label": 0, "source": src, "error_span": None, "target_spans": []}
    at_bug = FunctionScore([UseScore(b_use, b_use + 1, "b", -2.0, {"a": 0.0}), UseScore(a_use, a_use + 1, "a", 1.0, {"b": 0.0})], 2)
    elsewhere = FunctionScore([UseScore(a_use, a_use + 1, "a", -1.0, {"b": -3.0, "a": 0.0})], 2)
    calm = FunctionScore([UseScore(a_use, a_use + 1, "a", 0.5, {"b": 0.0})], 2)
    m = misuse_metrics([at_bug, elsewhere, calm, at_bug], [bug, bug, clean, clean], threshold=0.0)
    assert m["accuracy"] == 0.75 and m["auroc"] == pytest.approx(2.5 / 4)  # one tie among the four pairs
    assert m["localization"] == pytest.approx(2 / 4)  # the first bug, and the calm clean one
    assert m["repair"] == pytest.approx(2 / 2) and m["joint"] == pytest.approx(1 / 2)
    # log odds: log sum over uses and alternatives of p(v) / p(written), less log(uses) and log(locals - 1)
    three = FunctionScore([UseScore(0, 1, "a", -1.0, {"b": -2.0, "c": -0.5}), UseScore(4, 5, "b", -1.0, {"a": -3.0, "c": -1.0})], 3)
    ratios = [math.exp(-1.0), math.exp(0.5), math.exp(-2.0), math.exp(0.0)]
    assert three.statistic("log_odds") == pytest.approx(math.log(sum(ratios)) - math.log(2) - math.log(2))
    assert three.statistic("min_margin") == pytest.approx(0.5) and three.suspect.best == "c"
    assert FunctionScore().statistic("log_odds") == -math.inf
    with pytest.raises(ValueError, match="statistic"):
        three.statistic("max")


def test_site_effect_compares_twins():
    clean = [FunctionScore([UseScore(0, 1, "a", -1.0, {"b": -2.0}), UseScore(5, 6, "b", -1.0, {"a": -1.5})], 2)]
    buggy = [FunctionScore([UseScore(0, 1, "b", -3.0, {"a": -1.0}), UseScore(5, 6, "b", -1.0, {"a": -1.5})], 2)]
    e = site_effect(clean, buggy, [0])
    assert e["pairs"] == 1 and e["min_margin"]["buggy_higher"] == 1.0 and e["log_odds"]["buggy_higher"] == 1.0
    assert e["margin"] == {"at_bug": -2.0, "same_use_clean_twin": 1.0, "other_uses_buggy_twin": 0.5, "bug_uses_scored": 1}
    assert site_effect(buggy, clean, [0])["min_margin"]["buggy_higher"] == 0.0


def _mlm_run(tmp_path, tokenizer=None):
    """A masked-LM run folder (config.yaml + checkpoints/last.ckpt) as `tessera fit` leaves it."""
    system = MaskedLMSystem(TokenEncoder(TokenEncoderConfig(**TINY)))
    data = {"class_path": "tasks.data.code.MaskedCodeDataModule",
            "init_args": {"corpus": "stdlib", "tokenizer": str(tokenizer), "vocab_size": 300}} if tokenizer else None
    run = write_run(tmp_path / "mlm", system, {"class_path": "tasks.text.MaskedLMSystem", "init_args": {
        "encoder": {"class_path": "modalities.TokenEncoder", "init_args": {"config": TINY}}}}, data)
    return system, run


def test_load_mlm_roundtrip_and_errors(tmp_path):
    system, run = _mlm_run(tmp_path)
    loaded, tok_path = load_mlm(run)
    assert tok_path is None  # no data section: the caller must name the tokenizer
    assert torch.equal(loaded.head.bias, system.head.bias) and not loaded.training
    assert torch.equal(loaded.encoder.frontend.word_embeddings.weight, system.encoder.frontend.word_embeddings.weight)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mlm(tmp_path / "missing")
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {k: v for k, v in system.state_dict().items() if k.startswith("encoder.")}}, ckpt)
    with pytest.raises(ValueError, match="does not fit"):
        load_mlm(run)


def test_command_writes_results_and_plot(tmp_path, tok):
    fns = []
    for p in range(4):
        src = "\n\n".join(f.replace("def ", f"def p{p}_{i}_") for i in range(6) for f in FUNCS)
        fns += list(extract_functions(src, f"pkg{p}", f"pkg{p}.py"))
    for bench, paired in ((tmp_path / "bench", False), (tmp_path / "paired", True)):
        for task in ("variable_misuse", "variable_misuse_repair"):
            (bench / task).mkdir(parents=True)
            for split in ("valid", "test"):
                rows = generate(task, fns, seed=0, split=split, paired=paired)
                (bench / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = tmp_path / "bench"
    tok.save(tmp_path / "tok")
    _, run = _mlm_run(tmp_path, tokenizer=tmp_path / "tok")  # the run's own tokenizer is used
    assert tessera(["eval", "code-misuse", "--mlm", str(run), "--benchmark", str(bench), "--out", str(tmp_path / "out"),
                    "--max-length", "128", "--precision", "32", "--paired", str(tmp_path / "paired"),
                    "--max-pairs", "5", "--quiet"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    for task in ("variable_misuse", "variable_misuse_repair"):
        row = res["tasks"][task]
        valid, test = row["valid"], row["test"]
        assert valid["threshold"] == test["threshold"]  # chosen on valid, applied to test
        assert set(row["by_statistic"]) == set(STATISTICS) and row["by_statistic"][row["statistic"]]["test"] == test
        assert row["statistic"] == max(STATISTICS, key=lambda k: (row["by_statistic"][k]["valid"]["accuracy"],
                                                                  row["by_statistic"][k]["valid"]["auroc"]))
        assert test["examples"] == len(res["margins"][task]["clean"]) + len(res["margins"][task]["buggy"])
        assert 0.0 <= test["accuracy"] <= 1.0 and test["scored_uses"] > 0
    assert "joint" in res["tasks"]["variable_misuse_repair"]["test"]
    assert res["paired"]["pairs"] == 5 and res["paired"]["margin"]["bug_uses_scored"] == 5  # each bug's use scored
    # an unpaired benchmark has no twins: one line, exit 2
    assert tessera(["eval", "code-misuse", "--mlm", str(run), "--benchmark", str(bench), "--out", str(tmp_path / "o2"),
                    "--max-length", "128", "--tasks", "variable_misuse", "--paired", str(bench), "--quiet"]) == 2
    assert (tmp_path / "out" / "margins.png").stat().st_size > 0


@pytest.mark.parametrize("case", ["missing run", "empty folder", "not a masked LM", "corrupt checkpoint",
                                  "missing benchmark", "no tokenizer", "unknown option"])
def test_code_misuse_bad_inputs_exit_2_with_one_line(tmp_path, tok, capsys, case):
    """Each mistake: exit status 2 and one line on stderr naming the input, no traceback."""
    tok.save(tmp_path / "tok")
    _, run = _mlm_run(tmp_path, tokenizer=tmp_path / "tok")
    bench = tmp_path / "bench"
    (bench / "variable_misuse").mkdir(parents=True)
    args = {"--mlm": str(run), "--benchmark": str(bench)}
    extra, named = [], None
    if case == "missing run":
        args["--mlm"] = named = str(tmp_path / "nowhere")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        args["--mlm"] = named = str(tmp_path / "empty")
    elif case == "not a masked LM":  # a fine-tuning run has no MLM head
        from tasks.code import CodeClassifierSystem

        other = write_run(tmp_path / "fine", CodeClassifierSystem(TokenEncoder(TokenEncoderConfig(**TINY))), {
            "class_path": "tasks.code.CodeClassifierSystem",
            "init_args": {"encoder": {"class_path": "modalities.TokenEncoder", "init_args": {"config": TINY}}}})
        args["--mlm"] = named = str(other)
    elif case == "corrupt checkpoint":
        (run / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage")
        named = "last.ckpt"
    elif case == "missing benchmark":
        args["--benchmark"] = named = str(tmp_path / "no_bench")
    elif case == "no tokenizer":
        _, bare = _mlm_run(tmp_path / "bare")
        args["--mlm"], named = str(bare), "--tokenizer"
    else:
        extra, named = ["--bogus"], "--bogus"
    rc = tessera(["eval", "code-misuse", *[x for kv in args.items() for x in kv], "--out", str(tmp_path / "o"),
                  "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err)
    if case != "unknown option":
        assert len(err) == 1
