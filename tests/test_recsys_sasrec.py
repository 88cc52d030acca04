"""SASRec on the shared backbone: causal (never looks ahead), next-item batches, the sampled-softmax
scores, init_from, and a short fit through the CLI that learns an ordered log."""

import json

import pytest
import torch

from modalities.recsys import (
    BERT4Rec,
    BERT4RecConfig,
    SASRec,
    SASRecConfig,
    build_sequences,
    read_interactions,
)
from tasks.cli import main as cli_main
from tests.test_recsys import write_log

TINY = dict(num_items=30, max_length=8, hidden_size=16, num_heads=2, intermediate_size=32, dropout=0.0)


def test_sasrec_never_looks_ahead_and_scores_after_the_last_item():
    model = SASRec(SASRecConfig(**TINY)).eval()
    a = torch.tensor([[1, 2, 3, 4, 5]])
    b = torch.tensor([[1, 2, 3, 9, 7]])
    mask = torch.ones_like(a, dtype=torch.bool)
    ha, hb = model(a, mask), model(b, mask)
    assert torch.allclose(ha[:, :3], hb[:, :3], atol=1e-6) and not torch.allclose(ha[:, 3], hb[:, 3])
    # no MASK item is fed: the vector of [1, 2, 3] is the hidden state at item 3
    assert torch.allclose(model.user_vectors([[1, 2, 3]])[0], ha[0, 2], atol=1e-6)
    bert = BERT4Rec(BERT4RecConfig(**TINY)).eval()
    hb = bert(a, mask)
    assert not torch.allclose(hb[:, :3], bert(b, mask)[:, :3])  # BERT4Rec: bidirectional
    with pytest.raises(ValueError, match="causal must be True"):
        SASRecConfig(**TINY, causal=False)


def test_candidate_scores_equal_the_full_item_scores_on_those_columns():
    model = SASRec(SASRecConfig(**TINY)).eval()
    h = torch.randn(5, 16)
    cols = torch.randint(0, 30, (5, 7))
    assert torch.allclose(model.candidate_scores(h, cols), model.item_scores(h).gather(1, cols), atol=1e-5)


def test_next_item_batches_predict_each_following_item(tmp_path):
    from tasks.data import SequenceDataModule
    from tasks.data.collate import IGNORE

    dm = SequenceDataModule(str(write_log(tmp_path, n_users=4, per_user=8)), objective="next", max_length=5)
    dm.setup()
    seqs = [torch.tensor([3, 4, 5, 6, 7, 8]), torch.tensor([9, 10, 11])]
    batch = dm._collate_train([((0, 0), seqs[0]), ((0, 1), seqs[1])])
    assert batch["items"].tolist() == [[3, 4, 5, 6, 7], [9, 10, 0, 0, 0]]
    assert batch["labels"].tolist() == [[4, 5, 6, 7, 8], [10, 11, IGNORE, IGNORE, IGNORE]]
    query, hist, target, _ = dm.val_dataloader().dataset[0]
    assert query.tolist() == hist.tolist()[-5:] and dm.data.mask_id not in query.tolist()  # no MASK fed
    with pytest.raises(ValueError, match="objective must be 'cloze'"):
        SequenceDataModule("x.dat", objective="causal")


def test_init_from_starts_from_an_encoder_folder_and_refuses_another_shape(tmp_path):
    from modalities.hub import save_encoder
    from tasks.recsys import BERT4RecSystem, SASRecSystem

    src = SASRec(SASRecConfig(**TINY))
    save_encoder(src, tmp_path / "f")
    system = SASRecSystem(SASRec(SASRecConfig(**TINY)), init_from=str(tmp_path / "f"))
    for k, v in src.state_dict().items():
        assert torch.equal(system.model.state_dict()[k], v), k
    with pytest.raises(ValueError, match="init_from .* holds a SASRec"):
        BERT4RecSystem(BERT4Rec(BERT4RecConfig(**TINY)), init_from=str(tmp_path / "f"))
    with pytest.raises(FileNotFoundError, match="init_from .* is not an encoder folder"):
        SASRecSystem(SASRec(SASRecConfig(**TINY)), init_from=str(tmp_path / "none"))


def test_sasrec_fit_with_sampled_softmax_learns_an_ordered_log_above_mostpopular(tmp_path):
    path = write_log(tmp_path, n_users=60, n_items=200, per_user=15)
    num_items = build_sequences(read_interactions(path)).num_items
    root = tmp_path / "run"
    args = ["fit", "--config", "configs/recsys/sasrec_tiny.yaml", "--data.init_args.dataset", str(path),
            "--model.init_args.loss_negatives", "20", "--model.init_args.lr", "1e-2",
            "--data.init_args.batch_size", "16", "--trainer.max_epochs", "4", "--trainer.limit_val_batches", "0",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    assert cli_main(args) in (0, None)
    folder = root / "lightning_logs" / "version_0" / "encoder"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "sasrec"
    assert config["config"]["num_items"] == num_items  # the config's 0: taken from the data
    out = tmp_path / "eval"
    assert cli_main(["eval", "recsys", "--run", str(folder), "--data", str(path), "--negatives", "20",
                     "--out", str(out)]) == 0
    report = json.loads((out / "ranking.json").read_text())
    assert report["architecture"] == "SASRec"
    # the run itself (config num_items 0, the weights' count) ranks the same
    assert cli_main(["eval", "recsys", "--run", str(root), "--data", str(path), "--negatives", "20",
                     "--out", str(tmp_path / "run_eval")]) == 0
    assert json.loads((tmp_path / "run_eval" / "ranking.json").read_text())["protocols"] == report["protocols"]
    for proto in ("full", "full_history", "pop20", "uni20"):
        rows = report["protocols"][proto]
        assert rows["model"]["hr@10"] > 0.8 and rows["model"]["mrr"] > rows["mostpop"]["mrr"] + 0.2, (proto, rows)


# --- a trained model travels: its item-id map, recommendations in the data's own ids ---------------

def _folder(tmp_path):
    from modalities.hub import save_encoder

    folder = tmp_path / "enc"
    save_encoder(SASRec(SASRecConfig(**TINY)), folder)
    ids = {f"m{100 + i}": i for i in range(1, 31)}  # the data's own ids: m101..m130
    (folder / "item_ids.json").write_text(json.dumps(ids))
    return folder


def test_recsys_predict_takes_histories_in_the_datas_ids_for_users_never_seen(tmp_path):
    folder = _folder(tmp_path)
    hist = tmp_path / "users.jsonl"
    hist.write_text('{"user": "new-1", "items": ["m101", "m105", "zzz"]}\n{"user": "new-2", "items": ["nope"]}\n'
                    '{"user": "new-3", "items": ["m130"]}\n')
    out = tmp_path / "top.jsonl"
    assert cli_main(["eval", "recsys-predict", "--run", str(folder), "--histories", str(hist), "--out", str(out),
                     "--k", "5"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user"] for r in rows] == ["new-1", "new-2", "new-3"]
    assert len(rows[0]["items"]) == 5 and not {"m101", "m105"} & set(rows[0]["items"]) and rows[0]["unknown"] == 1
    assert all(i.startswith("m1") for i in rows[0]["items"]) and rows[0]["scores"] == sorted(rows[0]["scores"])[::-1]
    assert rows[1] == {"user": "new-2", "items": [], "scores": [], "unknown": 1}
    # the same ranking as the model's own recommend() on its indices
    from modalities.hub import load_encoder

    model = load_encoder(folder)
    assert rows[2]["items"] == [f"m{100 + i}" for i in model.recommend([30], k=5)]


def test_recsys_predict_bad_inputs_are_one_line_and_status_2(tmp_path, capsys):
    folder = _folder(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    cases = [(["--histories", str(tmp_path / "none.jsonl")], "--histories"),
             (["--histories", str(tmp_path / "empty.jsonl")], "holds no history"),
             (["--histories", str(tmp_path / "empty.jsonl"), "--k", "0"], "--k must be >= 1")]
    for extra, expected in cases:
        assert cli_main(["eval", "recsys-predict", "--run", str(folder), "--out", str(tmp_path / "o.jsonl"),
                         *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert expected in err[-1] and "Traceback" not in "\n".join(err), err
