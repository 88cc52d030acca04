"""Interaction files users bring, each in its exact public format, through the readers and the data
module's options (format, columns, min_rating, item_core); bad input named or counted."""

import json

import pytest

from modalities.recsys import build_sequences, read_interactions
from tasks.data import SequenceDataModule


def test_ml1m_ratings_dat(tmp_path):
    p = tmp_path / "ratings.dat"
    p.write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::x::4\n")
    inter = read_interactions(p)
    assert inter.users == ["1", "1", "2"] and inter.items == ["1193", "661", "1193"]
    assert inter.timestamps[0] == 978300760 and inter.stats.skipped == {"not 4 fields": 1}


def test_ml20m_ratings_csv_with_its_header(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n2,3,4.0,974820889\n")
    inter = read_interactions(p)
    assert inter.users == ["1", "1", "2"] and inter.items == ["2", "29", "3"] and inter.timestamps[1] == 1112484676
    kept = read_interactions(p, min_rating=4.0)
    assert kept.items == ["3"] and kept.stats.skipped == {"rating below 4": 2}


def test_amazon_ratings_headerless_csv(tmp_path):
    p = tmp_path / "ratings_Books.csv"
    p.write_text("AH2L9G3DQHHAJ,0000000116,4.0,1019865600\nA2IIIDRK3PRRZY,0000000116,1.0,1395619200\n"
                 "A1TADCM7YWPQ8M,0000000868,4.0,1031702400,extra\n")
    inter = read_interactions(p)
    assert inter.users == ["AH2L9G3DQHHAJ", "A2IIIDRK3PRRZY"] and inter.items == ["0000000116"] * 2
    assert inter.stats.skipped == {"not 4 fields": 1}


def test_amazon_reviews_json_lines(tmp_path):
    p = tmp_path / "reviews_Books_5.json"
    rows = [{"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "reviewerName": "J. McDonald", "overall": 5.0,
             "reviewText": "...", "unixReviewTime": 1203984000, "reviewTime": "02 26, 2008"},
            {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000015393", "overall": 2.0, "unixReviewTime": 1203984100},
            {"reviewerID": "B1", "asin": "0000013714", "overall": 4.0}]  # no time: skipped, counted
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inter = read_interactions(p)
    assert inter.items == ["0000013714", "0000015393"] and inter.timestamps == [1203984000, 1203984100]
    assert inter.stats.skipped == {"missing timestamp": 1}
    assert read_interactions(p, min_rating=3).items == ["0000013714"]


def test_gzipped_files_and_a_byte_order_mark_read_like_the_plain_file(tmp_path):
    """Amazon ships its reviews as `.json.gz`; a CSV saved by Excel starts with a byte-order mark."""
    import gzip

    text = "userId,movieId,rating,timestamp\r\n1,2,3.5,1112486027\r\n1,29,3.5,1112484676\r\n"
    plain = read_interactions(_write(tmp_path / "ratings.csv", text.encode()))
    bom = read_interactions(_write(tmp_path / "bom" / "ratings.csv", b"\xef\xbb\xbf" + text.encode()))
    gz = read_interactions(_write(tmp_path / "ratings.csv.gz", gzip.compress(text.encode())))
    assert plain.users == bom.users == gz.users == ["1", "1"] and plain.items == bom.items == gz.items == ["2", "29"]
    review = json.dumps({"reviewerID": "A2", "asin": "B1", "overall": 5.0, "unixReviewTime": 1203984000}) + "\n"
    assert read_interactions(_write(tmp_path / "reviews_Books_5.json.gz", gzip.compress(review.encode()))).items == ["B1"]
    damaged = _write(tmp_path / "cut.csv.gz", gzip.compress(text.encode() * 50)[:60])
    with pytest.raises(ValueError, match="cut.csv.gz: the gzip stream is damaged"):
        read_interactions(damaged)


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_steam_python_literal_lines_with_dates(tmp_path):
    p = tmp_path / "steam_reviews.json"
    p.write_text("{'username': 'Chaos Syren', 'hours': 0.1, 'product_id': '725280', 'page_order': 0, "
                 "'date': '2017-12-17', 'text': 'This would not be acceptable', 'early_access': False, 'page': 1}\n"
                 "{'username': 'Chaos Syren', 'product_id': '328100', 'date': '2017-12-18', 'early_access': True}\n")
    inter = read_interactions(p)
    assert inter.users == ["Chaos Syren"] * 2 and inter.items == ["725280", "328100"]
    assert inter.timestamps == [1513468800.0, 1513555200.0]


def test_recbole_inter_with_a_typed_header_and_a_column_mapping(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"
                 "186\t302\t3\t891717742\n")
    assert read_interactions(p).items == ["242", "302"]
    q = tmp_path / "y.inter"
    q.write_text("uid:token\tiid:token\tts:float\n1\t2\t3\n")
    assert read_interactions(q, columns={"user": "uid", "item": "iid", "timestamp": "ts"}).items == ["2"]
    with pytest.raises(ValueError, match=r"y.inter: columns \['user_id', 'item_id', 'timestamp'\] not found .* data.init_args.columns"):
        read_interactions(q)


@pytest.mark.parametrize("name, content, match", [
    ("ratings.csv", "", r"ratings.csv: columns .* not found"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n", r"ratings.csv holds no usable interaction"),
    ("r.dat", "1::2::3::abc\n1::3::4::\n", r"r.dat holds no usable interaction .*missing timestamp: 1, non-numeric timestamp: 1"),
    ("r.dat", "-1::2::3::5\n1::-2::3::6\n", r"negative user or item id: 2"),
    ("r.csv", "user,item,time\n1,2\n", r"r.csv: columns \['user_id', 'item_id', 'timestamp'\] not found"),
    ("r.jsonl", '{"u": 1, "i": 2, "t": 3}\n', r"r.jsonl: no line has the key\(s\) \['user_id', 'item_id', 'timestamp'\]"),
    ("r.xls", "x", r"unknown interaction format '.xls'.*data.init_args.format"),
])
def test_bad_interaction_files_name_the_file_and_the_column(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_interactions(p)


def test_ragged_rows_and_duplicates_are_skipped_with_counts(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,timestamp\n1,2,3\n1,2,3\n1,3\n1,4,5,6\n")
    assert read_interactions(p).stats.skipped == {"exact duplicate row": 1, "wrong number of fields": 2}
    with pytest.raises(ValueError, match="columns has unknown keys"):
        read_interactions(p, columns={"users": "1"})


def test_item_core_and_user_core_repeat_until_both_hold():
    from modalities.recsys import Interactions

    inter = Interactions()
    rows = [(u, i) for u in "abc" for i in "xyz"] + [("a", "w"), ("d", "x"), ("d", "y"), ("d", "z"), ("d", "v")]
    for k, (u, i) in enumerate(rows):
        inter.add(u, i, str(k))
    data = build_sequences(inter, min_interactions=3, item_core=2)  # w, v seen once: dropped; then d has 3
    assert sorted(data.items) == ["x", "y", "z"] and data.users == ["a", "b", "c", "d"]
    assert data.stats["dropped_items"] == 2
    with pytest.raises(ValueError, match="lower min_interactions / item_core"):
        build_sequences(inter, min_interactions=3, item_core=9)


def test_the_data_module_reads_user_data_through_its_options_and_derives_num_items(tmp_path, capsys):
    p = tmp_path / "ratings.csv"
    lines = [f"{u},{i},{1 + (u + i) % 5}.0,{1000 * u + i}" for u in range(1, 7) for i in range(1, 9)]
    p.write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
    dm = SequenceDataModule(str(p), min_rating=2.0, min_interactions=3)
    dm.setup()
    assert dm.spec.num_items == dm.num_items == len(set(dm.data.items)) == 8
    below = sum(1 + (u + i) % 5 < 2 for u in range(1, 7) for i in range(1, 9))
    assert dm.data.stats["skipped_rows"] == {"rating below 2": below}
    # the counts reach the console at set-up and metrics.json through `stats`
    assert dm.stats["skipped_rows"] == {"rating below 2": below} and dm.stats["source"] == str(p)
    assert f"skipped rows: rating below 2: {below}" in capsys.readouterr().out
    missing = SequenceDataModule(str(tmp_path / "ratings.dat"))
    with pytest.raises(FileNotFoundError, match="data.init_args.dataset .*ratings.dat does not exist"):
        missing.prepare_data()


@pytest.mark.parametrize("config", ["configs/recsys/sasrec_ml1m.yaml", "configs/recsys/sasrec_ml20m.yaml"])
def test_ml1m_and_ml20m_configs_name_the_option_for_the_users_file(tmp_path, capsys, config):
    from tasks.cli import main as cli_main

    assert cli_main(["fit", "--config", config, "--trainer.default_root_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "data.init_args.dataset is not set" in err[-1] and "Traceback" not in "\n".join(err), err
