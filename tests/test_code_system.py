"""Code fine-tuning systems: the classifier and the pointer, the BiLSTM baseline, init_from (an encoder
folder or a masked-LM run), pooling, KeepBest and ReleaseHeap."""

import json

import lightning as L
import pytest
import torch
from code_fixtures import module_source, tiny_encoder

from modalities.code import BiLSTMConfig, BiLSTMEncoder
from tasks.code import CodeClassifierSystem, VarMisusePointerSystem
from tasks.data.code import CodeTaskDataModule, MaskedCodeDataModule
from tasks.text import MaskedLMSystem


def test_bilstm_matches_a_packed_bidirectional_lstm():
    torch.manual_seed(0)
    cfg = BiLSTMConfig(vocab_size=50, embedding_size=12, hidden_size=16, num_layers=2, dropout=0.0)
    ours = BiLSTMEncoder(cfg).eval()
    ref = torch.nn.LSTM(12, 8, num_layers=2, bidirectional=True, batch_first=True).eval()
    with torch.no_grad():
        for k, layer in enumerate(ours.layers):
            for direction, suffix in (("fwd", ""), ("bwd", "_reverse")):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{k}{suffix}").copy_(getattr(layer[direction], f"{name}_l0"))
    lengths = torch.tensor([9, 3, 6, 1])
    mask = torch.arange(9)[None] < lengths[:, None]
    ids = torch.randint(1, 50, (4, 9)).masked_fill(~mask, 0)
    got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    packed = torch.nn.utils.rnn.pack_padded_sequence(ours.embed(ids), lengths, batch_first=True, enforce_sorted=False)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=9)
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)
    assert got[~mask].abs().max() == 0
    # padding never leaks into a row: the same row alone gives the same states
    alone = ours(input_ids=ids[1:2, :3], attention_mask=mask[1:2, :3]).last_hidden_state
    torch.testing.assert_close(alone[0], got[1, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task, system", [("variable_misuse", "classifier"), ("variable_misuse_repair", "pointer"),
                                          ("function_docstring", "classifier"), ("variable_misuse", "bilstm")])
def test_finetune_systems_fit_and_test(benchmark_dir, tmp_path, task, system):
    bench, tokdir = benchmark_dir
    dm = CodeTaskDataModule(task, str(bench), str(tokdir), max_length=128, batch_size=8, max_examples=64)
    if system == "pointer":
        model = VarMisusePointerSystem(tiny_encoder(), lr=1e-3)
    elif system == "bilstm":
        model = CodeClassifierSystem(BiLSTMEncoder(BiLSTMConfig(vocab_size=300, hidden_size=32)), pooling="mean")
    else:
        model = CodeClassifierSystem(tiny_encoder(), num_classes=2)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, use_distributed_sampler=False,
                        limit_val_batches=2, val_check_interval=2, enable_model_summary=False)
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    keys = ["test/accuracy"] if system != "pointer" else ["test/classification", "test/localization", "test/joint"]
    for k in keys:
        assert 0.0 <= result[k] <= 1.0
    assert json.loads((tmp_path / "test_metrics.json").read_text())


@pytest.mark.slow
def test_code_mlm_pretrain_then_finetune_from_checkpoint(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = []
    for p in range(8):
        path = folder / f"m{p}.py"
        rare = "".join(f"def rare{p}{k}(argument_{p}{k}_xq, quirky_{p}{k}_zv):\n    return argument_{p}{k}_xq - quirky_{p}{k}_zv\n\n\n"
                       for k in range(4))  # names a 300-subword vocabulary must split
        path.write_text(rare + module_source(12, offset=p))
        rows.append({"path": str(path), "package": f"p{p}", "split": "valid" if p == 0 else "train"})
    (folder / "bad.py").write_bytes(b"x = '\xff\n")
    rows.append({"path": str(folder / "bad.py"), "package": "p9", "split": "train"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = MaskedCodeDataModule(corpus=str(folder), vocab_size=300, max_length=64, batch_size=8,
                              cache_dir=str(tmp_path / "cache"))
    system = MaskedLMSystem(tiny_encoder(), lr=1e-3)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, use_distributed_sampler=False, limit_val_batches=1,
                        enable_model_summary=False)
    trainer.fit(system, dm)
    assert dm.stats["train_sequences"] > 0 and dm.stats["val_sequences"] > 0
    assert dm.stats["skipped_files"] == {"rejected by tokenize": 1}  # bad.py counted, not fatal
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 64 and (batch["labels"] != -100).any()
    # whole-word masking: every split name is predicted whole or not at all
    dm.whole_word = True
    batch = next(iter(dm.train_dataloader()))
    chosen = batch["labels"] != -100
    original = torch.where(chosen, batch["labels"], batch["input_ids"])  # [MASK] would start words of its own
    word = dm.code_tokenizer.word_starts(original).long().cumsum(1)
    split_words = 0
    for r in range(len(word)):
        for w in word[r].unique():
            at = word[r] == w
            split_words += int(at.sum() > 1)
            assert chosen[r, at].all() or not chosen[r, at].any()
    assert split_words > 0 and chosen.any()
    # init_from an encoder folder: the weights are copied in when fitting starts, strictly
    from tasks.export import export_encoder

    folder = export_encoder(system, tmp_path / "encoder", datamodule=dm)
    fine = CodeClassifierSystem(tiny_encoder(), init_from=str(folder))
    assert not torch.equal(fine.encoder.frontend.word_embeddings.weight, system.encoder.frontend.word_embeddings.weight)
    assert fine.start_from_pretrained()["keys"] > 0
    assert torch.equal(fine.encoder.frontend.word_embeddings.weight, system.encoder.frontend.word_embeddings.weight)
    with pytest.raises(ValueError, match="does not fit"):
        CodeClassifierSystem(tiny_encoder(vocab=500), init_from=str(folder)).start_from_pretrained()
    with pytest.raises(FileNotFoundError, match="init_from"):
        CodeClassifierSystem(tiny_encoder(), init_from=str(tmp_path / "nowhere")).start_from_pretrained()


def test_keep_best_restores_the_best_validation_round():
    from types import SimpleNamespace

    from tasks.callbacks import KeepBest

    module = torch.nn.Linear(2, 1)
    keep = KeepBest("val/accuracy")
    snapshots = {}
    for step, score in ((10, 0.5), (20, 0.7), (30, 0.6)):
        with torch.no_grad():
            module.weight.fill_(step)
        snapshots[step] = module.weight.clone()
        keep.on_validation_end(SimpleNamespace(sanity_checking=False, global_step=step,
                                               callback_metrics={"val/accuracy": torch.tensor(score)}), module)
    keep.restore(module)
    assert keep.best_step == 20 and keep.best_score == pytest.approx(0.7)
    assert torch.equal(module.weight, snapshots[20])
    assert [s for s, _ in keep.history] == [10, 20, 30]
    with pytest.raises(KeyError, match="val/loss"):
        KeepBest("val/loss", mode="min").on_validation_end(
            SimpleNamespace(sanity_checking=False, global_step=1, callback_metrics={}), module)


def test_classifier_pooling_ignores_padding():
    """"mean" and "max" pool the real tokens only and "cls" reads position 0: padding a sequence changes none."""
    torch.manual_seed(0)
    for pooling in ("cls", "mean", "max"):
        model = CodeClassifierSystem(tiny_encoder(), pooling=pooling).eval()
        ids = torch.randint(5, 300, (1, 9))
        padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
        mask = torch.arange(13)[None] < 9
        alone = model({"input_ids": ids, "attention_mask": torch.ones(1, 9, dtype=torch.bool)})
        with_pad = model({"input_ids": padded, "attention_mask": mask})
        assert torch.allclose(alone, with_pad, atol=1e-5), pooling
    cls, mean, mx = (CodeClassifierSystem(tiny_encoder(), pooling=p) for p in ("cls", "mean", "max"))
    mean.load_state_dict(cls.state_dict())
    mx.load_state_dict(cls.state_dict())
    batch = {"input_ids": ids, "attention_mask": torch.ones(1, 9, dtype=torch.bool)}
    outs = [m.eval()(batch) for m in (cls, mean, mx)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])
    # "max" is the element-wise maximum of the token states, read through the same head
    h = mx.encode(batch)
    assert torch.allclose(outs[2], mx.head(h.amax(1)).float(), atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        CodeClassifierSystem(tiny_encoder(), pooling="attention")


def test_release_heap_trims_on_schedule(tmp_path):
    import lightning as L

    from tasks.callbacks import ReleaseHeap

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.w(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = ReleaseHeap(every_n_steps=2)
    assert cb._trim is not None  # glibc Linux, as this project's machines
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 4)), batch_size=4)
    L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[cb], default_root_dir=tmp_path).fit(Tiny(), data)
    assert cb.trims == 2  # after steps 2 and 4
    with pytest.raises(ValueError, match="every_n_steps"):
        ReleaseHeap(every_n_steps=0)


def test_pointer_auroc_ranks_functions_by_the_bug_probability(benchmark_dir, tmp_path):
    """test/auroc: buggy functions ranked above clean ones by 1 - p(no bug), as a brute-force count says."""
    bench, tokdir = benchmark_dir
    dm = CodeTaskDataModule("variable_misuse_repair", str(bench), str(tokdir), max_length=128, batch_size=8,
                            max_examples=64)
    torch.manual_seed(0)
    model = VarMisusePointerSystem(tiny_encoder(), lr=1e-3)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (result,) = trainer.test(model, dm, verbose=False)
    scores, labels = [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            loc, _ = model.eval()(batch)
            scores += (1 - loc.double().softmax(-1)[:, 0]).tolist()
            labels += (batch["error_position"] > 0).long().tolist()
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    expected = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert 0 < len(pos) < len(scores)
    assert result["test/auroc"] == pytest.approx(expected, abs=1e-6)
    assert result["test/auroc"] != pytest.approx(1 - expected, abs=1e-3)  # the direction matters


def test_init_from_a_masked_lm_run_and_the_fine_tuned_run_reloads_without_it(tmp_path):
    """init_from a masked-LM run folder (rebuilt by tasks.runs.load_system) copies its encoder in when
    fitting starts; the fine-tuned run reloads through load_system after that folder is gone."""
    import shutil

    from code_fixtures import TINY, write_run

    from tasks.runs import load_system

    enc = {"class_path": "modalities.TokenEncoder", "init_args": {"config": TINY}}
    torch.manual_seed(1)
    mlm = MaskedLMSystem(tiny_encoder())
    run = write_run(tmp_path / "mlm", mlm, {"class_path": "tasks.text.MaskedLMSystem", "init_args": {"encoder": enc}})
    fine = CodeClassifierSystem(tiny_encoder(), init_from=str(run))
    fine.start_from_pretrained()
    for k, v in mlm.encoder.state_dict().items():
        assert torch.equal(v, fine.encoder.state_dict()[k]), k
    with torch.no_grad():
        fine.head.weight.add_(1.0)  # "fine-tuned"
    ft = write_run(tmp_path / "fine", fine, {"class_path": "tasks.code.CodeClassifierSystem",
                                             "init_args": {"init_from": str(run), "encoder": enc}})
    shutil.rmtree(run)
    again, _, _ = load_system(ft)
    assert torch.equal(again.head.weight, fine.head.weight) and again.pretrained_info is None
