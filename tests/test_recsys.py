"""BERT4Rec: readers on files in each format, sequences, metrics on a known case, both
evaluation protocols, the recommend API, and a short fit through the CLI."""

import json
import re

import pytest
import torch

from modalities.recsys import BERT4Rec, BERT4RecConfig, build_sequences, read_interactions
from tasks.cli import main as cli_main
from tasks.metrics import rank_of_target, ranking_metrics


def write_log(tmp_path, n_users=30, n_items=40, per_user=12, name="ratings.dat", sep="::", seed=0):
    g = torch.Generator().manual_seed(seed)
    lines = []
    for u in range(1, n_users + 1):
        # users drift through the catalogue: item ~ u + position, so order is learnable
        for k in range(per_user):
            item = (u + k) % n_items + 1
            lines.append(sep.join([str(u), str(item), str(int(torch.randint(1, 6, (1,), generator=g))), str(1000 * u + k)]))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_movielens_dat_reader_and_sequences(tmp_path):
    path = write_log(tmp_path)
    with path.open("a") as f:
        f.write("99::7::5\n")  # too few fields
        f.write("98::7::5::yesterday\n")  # non-numeric timestamp
        f.write("97::7::5::1\n97::8::5::2\n")  # a user with 2 interactions
    inter = read_interactions(path)
    assert len(inter) == 30 * 12 + 2
    assert inter.stats.skipped == {"not 4 fields": 1, "non-numeric timestamp": 1}
    data = build_sequences(inter, min_interactions=5)
    assert data.stats["users"] == 30 and data.dropped_users == 1
    assert data.mask_id == data.num_items + 1 and data.vocab_size == data.num_items + 2
    hist, tgt = data.split("test")
    assert all(len(h) == 11 for h in hist) and len(tgt) == 30
    vh, vt = data.split("val")
    assert vt[0] == hist[0][-1] and vh[0] == hist[0][:-1]


def test_ties_keep_file_order(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t100\n1\t20\t5\t50\n1\t30\t5\t50\n1\t40\t5\t200\n1\t50\t5\t300\n")
    data = build_sequences(read_interactions(tmp_path / "u.data"), min_interactions=5)
    assert [data.items[i - 1] for i in data.sequences[0]] == ["20", "30", "10", "40", "50"]


def test_atomic_and_csv_readers(tmp_path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t10\n1\t6\t3\t11\n")
    assert read_interactions(tmp_path / "x.inter").items == ["5", "6"]
    (tmp_path / "x.csv").write_text("uid,iid,ts\na,b,1\na,c,2\n")
    assert read_interactions(tmp_path / "x.csv", user="uid", item="iid", timestamp="ts").users == ["a", "a"]


@pytest.mark.parametrize(
    "content, name, match",
    [
        ("", "empty.dat", "holds no usable interaction"),
        ("user,item,time\n1,2,3\n", "bad.csv", r"columns \['user_id', 'item_id', 'timestamp'\] not found"),
        ("1::2::3::x\n", "ts.dat", "no usable interaction"),
        ("1 2 3\n", "x.parquet", "unknown interaction format"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, content, name, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        read_interactions(tmp_path / name)


def test_one_interaction_users_are_dropped_with_a_count(tmp_path):
    (tmp_path / "r.dat").write_text("1::2::5::1\n2::3::5::1\n")
    with pytest.raises(ValueError, match="no user has >= 5 interactions"):
        build_sequences(read_interactions(tmp_path / "r.dat"))


def test_ranking_metrics_on_a_known_case():
    # target (column 0) ranked first, third (two scores higher), eleventh (ten higher)
    scores = torch.tensor([[0.9, 0.1, 0.2] + [0.0] * 8, [0.5, 0.7, 0.6] + [0.0] * 8, [0.0] + [1.0] * 10])
    ranks = torch.tensor([0, 2, 10])
    assert torch.equal(rank_of_target(scores, torch.tensor([0, 0, 0])), ranks)
    m = ranking_metrics(ranks, ks=(1, 5, 10))
    assert m["hr@1"] == pytest.approx(1 / 3) and m["hr@5"] == pytest.approx(2 / 3) and m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / 2) / 3)  # 1/log2(2) + 1/log2(4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    # ties count half: a constant model does not get a free hit
    assert rank_of_target(torch.zeros(1, 101), torch.tensor([0])).item() == 50


def test_recommend_excludes_seen_and_rejects_unknown_items():
    model = BERT4Rec(BERT4RecConfig(num_items=50, max_length=10, hidden_size=16, num_heads=2, intermediate_size=32)).eval()
    top = model.recommend([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], k=10)
    assert len(top) == 10 and not set(top) & set(range(3, 15)) and all(1 <= i <= 50 for i in top)
    with pytest.raises(ValueError, match="unknown item ids \\[51\\]"):
        model.recommend([1, 51])
    with pytest.raises(ValueError, match="history is empty"):
        model.recommend([])



@pytest.mark.slow
def test_fit_and_test_through_the_cli(tmp_path):
    path = write_log(tmp_path, n_users=60, n_items=200, per_user=15)
    num_items = build_sequences(read_interactions(path)).num_items  # 74 distinct items
    root = tmp_path / "run"
    args = ["--config", "configs/recsys/bert4rec_ml100k.yaml", "--data.init_args.dataset", str(path),
            "--model.init_args.model.init_args.config.num_items", str(num_items),
            "--model.init_args.model.init_args.config.max_length", "16", "--data.init_args.max_length", "16",
            "--model.init_args.negatives", "10", "--model.init_args.warmup", "5", "--model.init_args.lr", "3e-3",
            "--model.init_args.model.init_args.config.dropout", "0.0", "--data.init_args.batch_size", "8",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    cli_main(["fit", *args, "--trainer.max_epochs", "30", "--trainer.check_val_every_n_epoch", "10"])
    best = [c for c in root.rglob("*.ckpt") if c.name != "last.ckpt"]
    assert len(best) == 1  # the monitored (best val/ndcg@10) checkpoint
    cli_main(["test", *args, "--ckpt_path", str(best[0])])
    report = json.loads(next(root.rglob("test_ranking.json")).read_text())
    assert set(report["protocols"]) == {"full", "full_history", "pop10", "uni10"}
    out = tmp_path / "top10.jsonl"
    cli_main(["predict", *args, "--ckpt_path", str(best[0]), "--trainer.callbacks+", "tasks.callbacks.JsonLinesWriter",
              "--trainer.callbacks.path", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 60 and all(len(r["items"]) == 10 for r in rows)
    seen = {}
    for line in path.read_text().splitlines():
        u, i = line.split("::")[:2]
        seen.setdefault(u, set()).add(i)
    assert all(not set(r["items"]) & seen[r["user"]] for r in rows)  # seen items excluded
    # the sequences follow a fixed order through the catalogue: far above the popularity floor
    full = report["protocols"]["full"]
    assert full["model"]["hr@10"] > full["mostpop"]["hr@10"] + 0.3, report  # random: ~0.17


def test_mismatched_item_count_is_a_clear_error(tmp_path, capsys):
    path = write_log(tmp_path, n_users=10, n_items=30)
    assert cli_main(["fit", "--config", "configs/recsys/bert4rec_ml100k.yaml", "--data.init_args.dataset", str(path),
                     "--model.init_args.model.init_args.config.num_items", "1682",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"the data has 21 items but the model was built for 1682; set .*num_items: 0", err), err


def test_cloze_batches_always_use_mask_and_change_every_epoch(tmp_path):
    from tasks.data import IGNORE, SequenceDataModule

    dm = SequenceDataModule(dataset=str(write_log(tmp_path, n_users=40, per_user=30)), max_length=20,
                            batch_size=8, mask_ratio=0.2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    chosen = batch["labels"] != IGNORE
    assert (batch["items"][chosen] == dm.data.mask_id).all()  # mask_prob 1.0: never a random item
    assert (batch["items"][~chosen & batch["mask"]] != dm.data.mask_id).all()
    assert chosen.any(1).all() and batch["items"].shape[1] == 20  # 28 training items -> a 20-item window
    loader.batch_sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["labels"], batch["labels"])


def test_last_item_samples_mask_only_the_last_item(tmp_path):
    from tasks.data import IGNORE, SequenceDataModule

    log = str(write_log(tmp_path, n_users=40, per_user=30))
    for ratio, expect_all in ((1.0, True), (0.5, False)):
        dm = SequenceDataModule(dataset=log, max_length=20, batch_size=40, mask_ratio=0.2, last_item_ratio=ratio)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        chosen = batch["labels"] != IGNORE
        last = batch["mask"].sum(1) - 1
        only_last = (chosen.sum(1) == 1) & chosen[torch.arange(len(last)), last]
        assert (batch["items"][chosen] == dm.data.mask_id).all()
        assert (batch["items"] == dm.data.mask_id).sum() == chosen.sum()  # no stale cloze masks left
        assert only_last.all() if expect_all else 0 < int(only_last.sum()) < 40
    with pytest.raises(ValueError, match="last_item_ratio"):
        SequenceDataModule(dataset=log, last_item_ratio=1.5)


def test_prefix_sequences_are_every_prefix_cut_to_max_length(tmp_path):
    from tasks.data import SequenceDataModule
    from tasks.data.recsys import ClozeTrain

    histories = [[1, 2, 3, 4, 5], [6, 7]]
    ds = ClozeTrain(histories, max_length=3, sequences="prefixes")
    got = [ds[i][1].tolist() for i in range(len(ds))]
    assert got == [[1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [6, 7]]
    dm = SequenceDataModule(dataset=str(write_log(tmp_path, n_users=10, per_user=12)), sequences="prefixes",
                            max_length=20, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_dataloader().dataset) == 10 * (12 - 2 - 1)  # prefixes of length >= 2 of 10 training items
    with pytest.raises(ValueError, match="sequences"):
        SequenceDataModule(dataset="x", sequences="chunks")


# --- reliability of the readers and the sampled protocol -------------------------------------------

def test_readers_drop_exact_duplicates_and_non_finite_timestamps(tmp_path):
    path = tmp_path / "r.dat"
    path.write_text("1::10::5::100\n1::10::5::100\n1::10::4::100\n1::11::5::nan\n1::12::5::inf\n1::13::5::-inf\n"
                    "1::14::5::101\n")
    inter = read_interactions(path)
    assert inter.items == ["10", "10", "14"]  # the re-rated row (4 stars) is not an exact duplicate
    assert inter.stats.skipped == {"exact duplicate row": 1, "non-finite timestamp": 3}
    (tmp_path / "r.csv").write_text("user_id,item_id,timestamp\na,b,1\na,b,1\na,c,NaN\n")
    assert read_interactions(tmp_path / "r.csv").stats.skipped == {"exact duplicate row": 1, "non-finite timestamp": 1}


def test_more_negatives_than_unseen_items_uses_them_all_and_counts_the_users(tmp_path):
    path = write_log(tmp_path, n_users=20, n_items=30, per_user=12)  # 30 items, 12 seen: 18 unseen at most
    folder = tmp_path / "f"
    data = build_sequences(read_interactions(path))
    from modalities.hub import save_encoder

    save_encoder(BERT4Rec(BERT4RecConfig(num_items=data.num_items, max_length=8, hidden_size=16, num_heads=2,
                                         intermediate_size=32)), folder)
    (folder / "item_ids.json").write_text(json.dumps({item: i for i, item in enumerate(data.items, start=1)}))
    assert cli_main(["eval", "recsys", "--run", str(folder), "--data", str(path), "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "ranking.json").read_text())
    for proto in ("pop100", "uni100"):
        c = report["candidates"][proto]
        assert c["requested"] == 100 and c["users_with_fewer"] == 20 and c["fewest"] == data.num_items - 12


# --- the encoder folder: BERT4Rec as an architecture ------------------------------------------------

def test_bert4rec_folder_round_trips_with_the_tied_output_layer_stored_once(tmp_path):
    from modalities.hub import load_encoder, save_encoder

    model = BERT4Rec(BERT4RecConfig(num_items=30, max_length=8, hidden_size=16, num_heads=2, intermediate_size=32)).eval()
    assert "head.embedding.weight" not in model.state_dict()
    save_encoder(model, tmp_path / "f")
    back = load_encoder(tmp_path / "f")
    assert back.head.embedding.weight is back.encoder.frontend.word_embeddings.weight  # still tied after loading
    hist = [[1, 2, 3], [4], list(range(1, 20))]  # the last is cut to max_length - 1
    assert torch.allclose(back.user_vectors(hist), model.user_vectors(hist), atol=1e-6)
    assert back.recommend([1, 2, 3]) == model.recommend([1, 2, 3])
    # a checkpoint written before the tie was stored once (both names) still loads, strictly
    state = {**model.state_dict(), "head.embedding.weight": model.encoder.frontend.word_embeddings.weight}
    BERT4Rec(model.config).load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match="unknown item ids \\[31\\]"):
        model.user_vectors([[1, 31]])


@pytest.fixture(scope="module")
def recsys_run(tmp_path_factory):
    """A tiny BERT4Rec fitted (then tested) on a synthetic log: its run folder, encoder folder and data."""
    tmp = tmp_path_factory.mktemp("recsys")
    path = write_log(tmp, n_users=60, n_items=200, per_user=15)
    num_items = build_sequences(read_interactions(path)).num_items
    root = tmp / "run"
    args = ["--config", "configs/recsys/bert4rec_tiny.yaml", "--data.init_args.dataset", str(path),
            "--model.init_args.model.init_args.config.num_items", str(num_items), "--model.init_args.negatives", "10",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    assert cli_main(["fit", *args, "--trainer.max_epochs", "3"]) in (0, None)
    log = root / "lightning_logs" / "version_0"
    cli_main(["test", *args, "--ckpt_path", str(log / "checkpoints" / "last.ckpt"), "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp / "test")])  # not into the run folder: it is the run's alone
    return {"tmp": tmp, "data": path, "root": root, "log": log, "encoder": log / "encoder",
            "test_report": json.loads((tmp / "test" / "test_ranking.json").read_text()), "num_items": num_items}


def test_fit_writes_a_recsys_encoder_folder_with_its_item_map(recsys_run):
    from modalities.hub import read_config

    folder = recsys_run["encoder"]
    raw = read_config(folder)
    assert raw["architecture"] == "bert4rec" and raw["meta"]["modality"] == "recsys"
    ids = json.loads((folder / "item_ids.json").read_text())
    assert len(ids) == recsys_run["num_items"] and sorted(ids.values()) == list(range(1, recsys_run["num_items"] + 1))
    data = build_sequences(read_interactions(recsys_run["data"]))
    assert all(ids[item] == i for i, item in enumerate(data.items, start=1))  # the data's own id -> model index


def test_eval_recsys_matches_the_systems_own_test_from_a_run_and_from_its_folder(recsys_run, tmp_path):
    reports = {}
    for name, src in (("run", recsys_run["root"]), ("folder", recsys_run["encoder"])):
        out = tmp_path / name
        assert cli_main(["eval", "recsys", "--run", str(src), "--data", str(recsys_run["data"]), "--negatives", "10",
                         "--out", str(out)]) == 0
        reports[name] = json.loads((out / "ranking.json").read_text())
        assert (out / "ranking.png").stat().st_size > 5_000
    a, b = reports["run"]["protocols"], reports["folder"]["protocols"]
    assert a == b and set(a) == {"full", "full_history", "pop10", "uni10"}
    own = recsys_run["test_report"]["protocols"]  # `tessera test` on the same weights: same ranks, same candidates
    for proto in a:
        for who in ("model", "mostpop"):
            assert a[proto][who] == pytest.approx(own[proto][who], abs=1e-9), (proto, who)
    assert reports["run"]["users"] == 60 and not any(reports["run"]["skipped"].values())


def test_eval_recsys_skips_and_counts_items_the_model_does_not_know(recsys_run, tmp_path):
    other = tmp_path / "other.dat"
    other.write_text(recsys_run["data"].read_text() + "".join(f"7::9{k}99::5::{99999 + k}\n" for k in range(3)))
    assert cli_main(["eval", "recsys", "--run", str(recsys_run["encoder"]), "--data", str(other),
                     "--negatives", "10", "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "ranking.json").read_text())
    assert report["skipped"]["users whose held-out item is unknown"] == 1  # user 7's new last item
    assert report["skipped"]["unknown items dropped from histories"] == 3 and report["users"] == 59


def test_embed_gives_one_vector_per_user_and_counts_unknown_items(recsys_run, tmp_path):
    from safetensors.torch import load_file

    data = build_sequences(read_interactions(recsys_run["data"]))
    u0 = [data.items[i - 1] for i in data.sequences[0]]
    (tmp_path / "h.txt").write_text(" ".join(u0) + "\n" + "nope1, " + ", ".join(u0[:3]) + "\nnope2 nope3\n")
    (tmp_path / "h.jsonl").write_text(json.dumps({"user": "a", "items": u0}) + "\n{\"bad\": 1}\n")
    out = tmp_path / "emb"
    assert cli_main(["embed", "--encoder", str(recsys_run["encoder"]), str(tmp_path / "h.txt"),
                     str(tmp_path / "h.jsonl"), str(recsys_run["data"]), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "recsys" and summary["count"] == 2 + 1 + 60
    assert summary["skipped"] == {"unknown item id": 3, "user with no known item": 1,
                                  '.jsonl line without "user" and an "items" list': 1}
    vectors = load_file(out / "embeddings.safetensors")["embeddings"]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    rows = {r["id"]: k for k, r in enumerate(index)}
    # the same history from a .txt line, a .jsonl line and the log itself: the same vector
    same = [rows[f"{tmp_path / 'h.txt'}:1"], rows["a"], rows[data.users[0]]]
    assert torch.allclose(vectors[same[0]], vectors[same[1]], atol=1e-5)
    assert torch.allclose(vectors[same[0]], vectors[same[2]], atol=1e-5)
    assert index[rows[f"{tmp_path / 'h.txt'}:2"]]["known_items"] == 3


def _bad_encoder_folders(recsys_run, tmp_path):
    import shutil

    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.hub import save_encoder

    empty = tmp_path / "empty"
    empty.mkdir()
    text = save_encoder(TokenEncoder(TokenEncoderConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                                        intermediate_size=32)), tmp_path / "text",
                        meta={"modality": "text"})
    corrupt, missing = tmp_path / "corrupt", tmp_path / "missing"
    for f in (corrupt, missing):
        shutil.copytree(recsys_run["encoder"], f)
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    (missing / "model.safetensors").unlink()
    return {"nope": (tmp_path / "nope", "does not exist"), "empty": (empty, "holds no config.yaml"),
            "text": (text, "not BERT4Rec"), "corrupt": (corrupt, "not a readable safetensors file"),
            "missing": (missing, "has no model.safetensors")}


def test_eval_recsys_bad_inputs_are_one_line_and_status_2(recsys_run, tmp_path, capsys):
    cases = list(_bad_encoder_folders(recsys_run, tmp_path).values())
    cases += [(recsys_run["encoder"], "--data"), (recsys_run["encoder"], "--negatives must be >= 0")]
    extra = {str(recsys_run["encoder"]): [["--data", str(tmp_path / "none.dat")], ["--data", str(recsys_run["data"]),
                                                                                   "--negatives", "-1"]]}
    for k, (src, expected) in enumerate(cases):
        argv = ["eval", "recsys", "--run", str(src), "--out", str(tmp_path / "o")]
        if k >= len(cases) - 2:
            argv += extra[str(recsys_run["encoder"])][k - (len(cases) - 2)]
        assert cli_main(argv) == 2, src
        err = capsys.readouterr().err
        assert expected in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert cli_main(["eval", "recsys", "--run", str(recsys_run["encoder"]), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_embed_recsys_bad_inputs_are_one_line_and_status_2(recsys_run, tmp_path, capsys):
    folders = _bad_encoder_folders(recsys_run, tmp_path)
    (tmp_path / "h.txt").write_text("1 2 3\n")
    (tmp_path / "nothing").mkdir()
    cases = [([str(folders[k][0]), str(tmp_path / "h.txt")], folders[k][1]) for k in ("nope", "corrupt", "missing")]
    cases += [
        ([str(folders["empty"][0]), str(tmp_path / "h.txt")], "has no config.json"),
        ([str(folders["text"][0]), str(tmp_path / "h.txt"), "--modality", "recsys"], "has no item_ids.json"),
        ([str(recsys_run["encoder"]), str(tmp_path / "gone.txt")], "does not exist"),
        ([str(recsys_run["encoder"]), str(tmp_path / "nothing")], "holds no item-history files"),
        ([str(recsys_run["encoder"]), str(tmp_path / "h.txt"), "--query", "zz"], "names no item this encoder knows"),
    ]
    for argv, expected in cases:
        assert cli_main(["embed", "--encoder", *argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert expected in err.strip().splitlines()[-1] and "Traceback" not in err, err


def test_prepare_ml100k_bad_inputs_are_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli_main(["prepare", "ml100k", "--cache", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert "--cache" in err and "is a file" in err and "Traceback" not in err
    assert cli_main(["prepare", "ml100k", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_ml100k_copies_the_real_data_into_the_cache(tmp_path, capsys):
    assert cli_main(["prepare", "ml100k", "--cache", str(tmp_path)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["users"] == 943 and stats["items"] == 1682 and stats["interactions"] == 100_000
    assert stats["skipped_rows"] == {}  # no duplicate, no bad timestamp in ML-100k
    assert not list(tmp_path.rglob("*.partial"))
