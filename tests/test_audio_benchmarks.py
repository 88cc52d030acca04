"""The public music benchmarks (MARBLE's tasks) read from tiny folders in their exact layouts, MARBLE's
metrics against sklearn, probe selection on the validation split, and `tessera eval audio-probe --task`."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import audio_encoder_folder, user_error

from modalities.audio.benchmarks import (
    GTZAN_GENRES,
    NSYNTH_FAMILIES,
    _emo_artist_split,
    parse_key,
    read_benchmark,
)
from modalities.audio.metrics import (
    KEY_CLASSES,
    key_score,
    pr_auc_macro,
    r2,
    roc_auc_macro,
    task_metrics,
)
from modalities.audio.probe import ProbeConfig, probe_layers
from tasks.cli import main as cli_main


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one thread is many times faster than two contending."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tone(i, seconds=0.12, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 6) * t)).astype(np.float32)


def write_audio(path, i, sr=16000, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(i, sr=sr), sr, format=fmt)


# ---- the layouts, as their users download them -----------------------------------------------------------------

def nsynth_folder(root, per_split=4):
    """nsynth-{train,valid,test}/examples.json (NSynth's full record schema) + audio/<note>.wav."""
    for s in ("train", "valid", "test"):
        examples = {}
        for j in range(per_split):
            fam = NSYNTH_FAMILIES[j % 2]
            name = f"{fam}_acoustic_{j:03d}-{60 + j:03d}-100"
            examples[name] = {
                "note": j, "note_str": name, "instrument": j, "instrument_str": f"{fam}_acoustic_{j:03d}",
                "pitch": 60 + j % 2, "velocity": 100, "sample_rate": 16000, "qualities": [0] * 10,
                "qualities_str": [], "instrument_family": NSYNTH_FAMILIES.index(fam), "instrument_family_str": fam,
                "instrument_source": 0, "instrument_source_str": "acoustic"}
            write_audio(root / f"nsynth-{s}" / "audio" / f"{name}.wav", j % 2 * 3)
        (root / f"nsynth-{s}" / "examples.json").write_text(json.dumps(examples))
    return root


def gtzan_folder(root, per_genre=3):
    """genres/<genre>/<genre>.000nn.wav (22,050 Hz) + {train,valid,test}_filtered.txt."""
    root.mkdir(parents=True, exist_ok=True)
    lists = {"train": [], "valid": [], "test": []}
    for g in GTZAN_GENRES[:2]:
        for j in range(per_genre * 3):
            rel = f"{g}/{g}.{j:05d}.wav"
            write_audio(root / "genres" / rel, GTZAN_GENRES.index(g) * 4, sr=22050)
            lists[("train", "valid", "test")[j % 3]].append(rel)
    for s, lines in lists.items():
        (root / f"{s}_filtered.txt").write_text("\n".join(lines) + "\n")
    return root


def giantsteps_folder(root, songs=6):
    """MARBLE's giantsteps_clips: meta.json (its preprocess.py's record) + wav/<clip uid>.wav, 2 clips a song."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {}
    for k in range(songs):
        split = ("train", "valid", "test")[k % 3]
        key = ("C major", "A minor")[k % 2]
        for c in range(2):
            uid = f"{k:07d}-{c}"
            meta[uid] = {"split": split, "y": key, "extra": {"id": k},
                         "clip": {"audio_uid": f"{k:07d}", "audio_duration": 60.0, "clip_idx": c,
                                  "clip_offset": 30.0 * c, "clip_duration": 30.0}}
            write_audio(root / "wav" / f"{uid}.wav", k % 2 * 5)
    (root / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return root


def mtt_folder(root, n_tags=60, clips=None):
    """annotations_final.csv: tab-separated, every field quoted (clip_id, tags..., mp3_path); mp3/<hex>/<name>.mp3."""
    root.mkdir(parents=True, exist_ok=True)
    tags = [f"tag{k}" for k in range(n_tags)]
    clips = clips or [(i, "0123456789abcdef"[i % 16]) for i in range(16)] + [(17, "c")]  # valid: 2 clips
    with (root / "annotations_final.csv").open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)
        w.writerow(["clip_id", *tags, "mp3_path"])
        for i, d in clips:
            # tag k is on for clips i <= k's share: tag 59 rarest... tags 0-9 on for every other clip
            row = [int((k < 50 and (i + k) % 2 == 0) or (k >= 50 and i == 0)) for k in range(n_tags)]
            rel = f"{d}/artist-album-{i:02d}-song-0-29.mp3"
            w.writerow([str(i), *map(str, row), rel])
            write_audio(root / "mp3" / rel, i % 2 * 4, fmt="MP3")
    return root


EMO_INFO = ["song_id", "file_name", "Artist", "Song title", "start of the segment (min.sec)",
            "end of the segment (min.sec)", "Genre", "Mediaeval 2013 set"]


def emo_folder(root, songs=12):
    """songs_info.csv + static_annotations.csv (emoMusic's columns) + clips_45seconds/<song_id>.mp3."""
    root.mkdir(parents=True, exist_ok=True)
    artists = [f"Artist {chr(65 + k)}" for k in range(26)]
    train_artist = next(a for a in artists if _emo_artist_split(a) == "train")
    valid_artist = next(a for a in artists if _emo_artist_split(a) == "valid")
    with (root / "songs_info.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EMO_INFO)
        for s in range(1, songs + 1):
            dev = s % 3 != 0
            artist = (train_artist if s % 3 == 1 else valid_artist) if dev else "Someone Else"
            w.writerow([s, f"{s}.mp3", artist, f"Song {s}", "0.30", "1.15", "Rock", "development" if dev else "evaluation"])
    with (root / "static_annotations.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["song_id", "mean_arousal", "std_arousal", "mean_valence", "std_valence"])
        for s in range(1, songs + 1):
            w.writerow([s, 3 + s % 2 * 3, 0.9, 4 + s % 2, 1.1])
    for s in range(1, songs + 1):
        write_audio(root / "clips_45seconds" / f"{s}.mp3", s % 2 * 5, fmt="MP3")
    return root


# ---- metrics -----------------------------------------------------------------------------------------------------

def test_mirex_key_score_weights_each_relation_as_mir_eval():
    c = KEY_CLASSES.index
    assert key_score(c("C major"), c("C major")) == 1.0
    assert key_score(c("C major"), c("G major")) == 0.5  # a fifth above
    assert key_score(c("C major"), c("F major")) == 0.0  # a fifth below: not credited
    assert key_score(c("C major"), c("A minor")) == 0.3  # relative minor
    assert key_score(c("A minor"), c("C major")) == 0.3  # relative major
    assert key_score(c("C major"), c("C minor")) == 0.2  # parallel
    assert key_score(c("C major"), c("Db major")) == 0.0
    assert parse_key("D# minor") == c("Eb minor") and parse_key("eb minor") == c("Eb minor")
    assert parse_key("C dorian") is None and parse_key("H major") is None


def test_auc_ap_and_r2_match_sklearn_with_ties_and_unscorable_tags():
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(50, 6, generator=g) > 0.6).float()
    y[:, 5] = 0  # a tag with no positive: left out of the macro mean
    s = torch.round(torch.rand(50, 6, generator=g) * 4) / 4  # many ties
    auc, n = roc_auc_macro(s, y)
    assert n == 5 and auc == pytest.approx(sk.roc_auc_score(y[:, :5].numpy(), s[:, :5].numpy()), abs=1e-9)
    ap, _ = pr_auc_macro(s, y)
    assert ap == pytest.approx(sk.average_precision_score(y[:, :5].numpy(), s[:, :5].numpy()), abs=1e-9)
    p, t = torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g)
    assert r2(p, t) == pytest.approx(list(sk.r2_score(t.numpy(), p.numpy(), multioutput="raw_values")), abs=1e-5)


def test_giantsteps_songs_are_scored_by_their_mean_clip_probability():
    c = KEY_CLASSES.index
    y = torch.tensor([c("C major")] * 3 + [c("A minor")])
    logits = torch.full((4, 24), -5.0)
    logits[0, c("C major")] = logits[1, c("G major")] = logits[2, c("C major")] = 5.0  # song a: 2 of 3 clips right
    logits[3, c("C major")] = 5.0  # song b: relative major
    r = task_metrics("multiclass", logits, y, groups=["a", "a", "a", "b"], keys=True)
    assert r["accuracy"] == 0.5 and r["key_score"] == pytest.approx((1 + 0.5 + 1 + 0.3) / 4)
    assert r["accuracy_song"] == 0.5 and r["key_score_song"] == pytest.approx((1 + 0.3) / 2)


def test_probe_picks_layer_and_lr_on_validation_and_scores_test_once_per_layer():
    g = torch.Generator().manual_seed(0)
    n = 90
    y = torch.arange(n) % 3
    feats = torch.randn(n, 2, 8, generator=g)
    feats[:, 1, :3] += 4 * torch.nn.functional.one_hot(y, 3)  # layer 1 carries the label, layer 0 is noise
    split = [("train", "train", "valid", "test")[i % 4] for i in range(n)]
    calls = []

    def score(out, which):
        calls.append(which)
        idx = [i for i, s in enumerate(split) if s == which]
        return {"accuracy": float((out.argmax(1) == y[idx]).float().mean())}

    cfg = ProbeConfig(lrs=(1e-2, 1e-6), hidden=16, epochs=15, patience=5)
    r = probe_layers(feats, split, y, "multiclass", score, "accuracy", cfg)
    assert r["best_layer"] == 1 and r["test"]["accuracy"] > 0.9 and r["layers"][0]["test"]["accuracy"] < 0.7
    assert r["layers"][1]["lr"] == 1e-2  # 1e-6 cannot learn in 15 epochs: valid says so
    assert calls.count("test") == 2 and calls.count("valid") > 2  # test once per layer; valid every epoch


# ---- readers -----------------------------------------------------------------------------------------------------

def test_nsynth_reads_three_splits_and_counts_unusable_notes(tmp_path):
    root = nsynth_folder(tmp_path)
    ex = json.loads((root / "nsynth-train" / "examples.json").read_text())
    odd = dict(next(iter(ex.values())), pitch=130, instrument_family_str="theremin")
    ex["theremin_001-130-100"] = odd  # out of NSynth's range: counted, not fatal
    ex["bass_synthetic_099-060-100"] = dict(odd, pitch=60, instrument_family_str="bass")  # no WAV
    (root / "nsynth-train" / "examples.json").write_text(json.dumps(ex))
    pitch = read_benchmark("nsynth-pitch", root)
    assert pitch.counts() == {"train": 4, "valid": 4, "test": 4} and pitch.targets[:4].tolist() == [60, 61, 60, 61]
    assert pitch.stats.skipped == {"pitch_out_of_range": 1, "missing_audio": 1} and len(pitch.classes) == 128
    inst = read_benchmark("nsynth-instrument", root)
    assert inst.targets[:4].tolist() == [0, 1, 0, 1] and inst.classes == list(NSYNTH_FAMILIES)
    assert inst.stats.skipped == {"unknown_family": 1, "missing_audio": 1}
    del ex["theremin_001-130-100"]["pitch"]
    (root / "nsynth-train" / "examples.json").write_text(json.dumps(ex))
    with pytest.raises(ValueError, match=r"examples.json: note 'theremin_001-130-100' has no field 'pitch'"):
        read_benchmark("nsynth-pitch", root)
    ex["theremin_001-130-100"]["pitch"] = "C4"
    (root / "nsynth-train" / "examples.json").write_text(json.dumps(ex))
    with pytest.raises(ValueError, match=r"field 'pitch' is 'C4', not an integer"):
        read_benchmark("nsynth-pitch", root)


def test_gtzan_reads_marbles_filtered_lists_and_names_bad_lines(tmp_path):
    root = gtzan_folder(tmp_path)
    (root / "genres" / "blues" / "blues.00000.wav").unlink()  # listed, absent: counted
    bm = read_benchmark("gtzan", root)
    assert bm.counts() == {"train": 5, "valid": 6, "test": 6} and bm.stats.skipped == {"missing_audio": 1}
    assert all(GTZAN_GENRES[int(t)] == f.parent.name for f, t in zip(bm.files, bm.targets, strict=True))
    (root / "test_filtered.txt").write_text("blues/blues.00002.wav\nblues.00005.wav\n")
    with pytest.raises(ValueError, match=r"test_filtered.txt, line 2: 'blues.00005.wav' is not <genre>/<file>.wav"):
        read_benchmark("gtzan", root)
    (root / "test_filtered.txt").write_text("polka/polka.00001.wav\n")
    with pytest.raises(ValueError, match=r"line 1: genre field 'polka'"):
        read_benchmark("gtzan", root)
    (root / "valid_filtered.txt").unlink()
    with pytest.raises(FileNotFoundError, match="valid_filtered.txt"):
        read_benchmark("gtzan", root)


def test_giantsteps_reads_marbles_meta_json_with_song_groups(tmp_path):
    root = giantsteps_folder(tmp_path)
    (root / "wav" / "0000005-1.wav").unlink()
    bm = read_benchmark("giantsteps-key", root)
    assert bm.counts() == {"train": 4, "valid": 4, "test": 3} and bm.stats.skipped == {"missing_audio": 1}
    assert set(bm.targets.tolist()) == {KEY_CLASSES.index("C major"), KEY_CLASSES.index("A minor")}
    assert bm.groups[:2] == ["0000000", "0000000"] and bm.metric == "key_score_song"
    meta = json.loads((root / "meta.json").read_text())
    meta["0000001-0"]["y"] = "A aeolian"
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta.json: clip '0000001-0': field 'y' is 'A aeolian'"):
        read_benchmark("giantsteps-key", root)


def test_mtt_takes_the_50_most_tagged_columns_and_splits_by_directory(tmp_path):
    root = mtt_folder(tmp_path)
    (root / "mp3" / "f" / "artist-album-15-song-0-29.mp3").unlink()
    bm = read_benchmark("mtt", root)
    # tags 50-59 are on for one clip only; odd tags on 9 clips, even ones on 8: by count, ties by column
    assert bm.classes == [f"tag{k}" for k in range(1, 50, 2)] + [f"tag{k}" for k in range(0, 50, 2)]
    assert bm.counts() == {"train": 12, "valid": 2, "test": 2} and bm.stats.skipped == {"missing_audio": 1}
    first = dict(zip(bm.classes, bm.targets[0].tolist(), strict=True))  # clip 0: even tags on
    assert bm.targets.shape == (16, 50) and (first["tag0"], first["tag1"], first["tag48"]) == (1, 0, 1)
    text = (root / "annotations_final.csv").read_text()
    (root / "annotations_final.csv").write_text(text.replace('"3"\t"0"\t"1"', '"3"\t"0"\t"yes"', 1))
    with pytest.raises(ValueError, match=r"annotations_final.csv, line 5: tag field 'tag1' is 'yes', not 0 or 1"):
        read_benchmark("mtt", root)
    (root / "annotations_final.csv").write_text(text.replace('"mp3_path"', '"path"'))
    with pytest.raises(ValueError, match="'mp3_path'"):
        read_benchmark("mtt", root)


def test_emomusic_splits_development_by_artist_and_standardises_targets(tmp_path):
    root = emo_folder(tmp_path)
    rows = (root / "static_annotations.csv").read_text().splitlines()
    (root / "static_annotations.csv").write_text("\n".join(rows[:-1]) + "\n")  # song 12 unannotated: counted
    bm = read_benchmark("emomusic", root)
    assert bm.counts() == {"train": 4, "valid": 4, "test": 3} and bm.stats.skipped == {"no_annotation": 1}
    dev = bm.targets[[i for i, s in enumerate(bm.split) if s != "test"]]
    assert dev.mean(0).abs().max() < 1e-5 and bm.classes == ["arousal", "valence"]
    (root / "static_annotations.csv").write_text("\n".join(rows).replace("2,3,0.9", "2,high,0.9") + "\n")
    with pytest.raises(ValueError, match=r"static_annotations.csv, line 3: field 'mean_arousal' is 'high'"):
        read_benchmark("emomusic", root)
    (root / "songs_info.csv").write_text("song_id,Artist\n1,A\n")
    with pytest.raises(ValueError, match="songs_info.csv: no column 'Mediaeval 2013 set'"):
        read_benchmark("emomusic", root)


# ---- the command -------------------------------------------------------------------------------------------------

QUICK = ["--lr", "1e-2,1e-3", "--epochs", "3", "--hidden", "16", "--batch-size", "32", "--quiet"]


@pytest.mark.parametrize("task,make,metric", [
    ("gtzan", gtzan_folder, "accuracy"),
    ("nsynth-instrument", nsynth_folder, "accuracy"),
    ("giantsteps-key", giantsteps_folder, "key_score_song"),
    ("mtt", mtt_folder, "roc_auc"),
    ("emomusic", emo_folder, "r2"),
])
def test_task_probe_writes_every_layer_chosen_on_valid(tmp_path, capsys, task, make, metric):
    enc = audio_encoder_folder(tmp_path)
    data = make(tmp_path / "data")
    broken = next(p for p in sorted((data).rglob("*")) if p.suffix in (".wav", ".mp3"))
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVE junk")  # undecodable: counted on the console and in the JSON
    out = tmp_path / "probe"
    assert cli_main(["eval", "audio-probe", "--encoder", str(enc), "--task", task, "--data", str(data),
                     "--out", str(out), *QUICK]) == 0
    r = json.loads((out / "probe.json").read_text())
    assert r["metric"] == metric and len(r["layers"]) == 3  # the frontend + 2 layers
    assert r["best_layer"] == max(range(3), key=lambda i: r["layers"][i]["valid"])
    assert r["test"] == r["layers"][r["best_layer"]]["test"] and metric in r["test"]
    assert all(layer["lr"] in (1e-2, 1e-3) for layer in r["layers"])
    assert r["skipped"]["audio"] == {"unreadable": 1}
    assert (out / "probe.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "unreadable: 1" in printed and f"test {metric}" in printed


def test_task_probe_bad_inputs_are_one_line_errors(tmp_path, capsys):
    enc = audio_encoder_folder(tmp_path)
    base = ["eval", "audio-probe", "--encoder", str(enc)]
    user_error(capsys, [*base, "--task", "gtzan"], "--data")
    user_error(capsys, [*base, "--task", "gtzan", "--data", str(tmp_path / "nope")], "nope", "not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    user_error(capsys, [*base, "--task", "gtzan", "--data", str(empty)], "train_filtered.txt")
    user_error(capsys, [*base, "--task", "emomusic", "--data", str(empty)], "songs_info.csv")
    user_error(capsys, [*base, "--task", "mtt", "--data", str(empty)], "annotations_final.csv")
    user_error(capsys, [*base, "--task", "giantsteps-key", "--data", str(empty)], "meta.json")
    user_error(capsys, [*base, "--task", "nsynth-pitch", "--data", str(empty)], "examples.json")
    (empty / "meta.json").write_text("{broken")
    user_error(capsys, [*base, "--task", "giantsteps-key", "--data", str(empty)], "meta.json", "not valid JSON")
    data = gtzan_folder(tmp_path / "gtzan")
    (data / "train_filtered.txt").write_text("blues/x/y.wav\n")
    user_error(capsys, [*base, "--task", "gtzan", "--data", str(data)], "train_filtered.txt, line 1")
    user_error(capsys, [*base, "--data", str(data)], "--data", "--task")
    user_error(capsys, [*base, "--task", "gtzan", "--data", str(data), "--lr", "fast"], "--lr")
    user_error(capsys, [*base, "--task", "gtzan", "--data", str(data), "--batch-size", "0"], "--batch-size 0")
    user_error(capsys, [*base, "--task", "polka", "--data", str(data)], "--task")


def test_limit_samples_each_split_and_probe_layers_restricts_the_search(tmp_path, capsys):
    enc = audio_encoder_folder(tmp_path)
    data = gtzan_folder(tmp_path / "data")
    out = tmp_path / "probe"
    assert cli_main(["eval", "audio-probe", "--encoder", str(enc), "--task", "gtzan", "--data", str(data),
                     "--out", str(out), "--limit", "2", "--probe-layers", "2,1", "--baselines", *QUICK]) == 0
    r = json.loads((out / "probe.json").read_text())
    assert r["clips"] == {"train": 2, "valid": 2, "test": 2} and r["limit_per_split"] == 2
    assert [x["layer"] for x in r["layers"]] == [1, 2] and r["best_layer"] in (1, 2)
    assert r["baselines"]["random_weights"]["best_layer"] in (0, 1, 2) and r["baselines"]["log_mel"]["best_layer"] == 0
    assert "accuracy" in r["baselines"]["log_mel"]["test"] and "baseline log mel" in capsys.readouterr().out
    base = ["eval", "audio-probe", "--encoder", str(enc), "--task", "gtzan", "--data", str(data), "--limit", "1"]
    user_error(capsys, [*base, "--probe-layers", "3", *QUICK], "--probe-layers 3", "0..2")
    user_error(capsys, [*base, "--probe-layers", "top", *QUICK], "--probe-layers")
    user_error(capsys, [*base, "--device", "warp-drive", *QUICK], "--device warp-drive")
    tags = mtt_folder(tmp_path / "mtt", clips=[(0, "0"), (1, "1"), (2, "c"), (3, "d")])  # one valid clip
    user_error(capsys, ["eval", "audio-probe", "--encoder", str(enc), "--task", "mtt", "--data", str(tags), *QUICK],
               "validation split (1 clips) gives no roc_auc")


def test_stream_features_keeps_each_files_features_beside_its_index_across_chunks(tmp_path):
    from modalities.audio.datasets import stream_features

    files = []
    for i in range(5):
        files.append(tmp_path / f"t{i}.wav")
        sf.write(files[-1], tone(i, seconds=0.05 * (i + 1)), 16000)
    files[2].write_bytes(b"not audio")
    feats, keep, stats = stream_features(files, {"n": lambda clips: torch.tensor([len(c) for c in clips])},
                                         sample_rate=16000, chunk=2)
    assert keep == [0, 1, 3, 4] and feats["n"].tolist() == [800, 1600, 3200, 4000]
    assert stats.files == 5 and stats.records == 4 and stats.skipped == {"unreadable": 1}
    windows, _, _ = stream_features(files[3:], {"n": lambda clips: torch.tensor([len(c) for c in clips])},
                                    sample_rate=16000, max_seconds=0.1, offsets=[0.15, 0.0])
    assert windows["n"].tolist() == [800, 1600]  # 0.2 s file from 0.15 s: 0.05 s left; the other cut at 0.1 s


def giantsteps_raw_folder(root):
    """MARBLE's data/GS after download_gs.sh + unzip: both annotation repositories and audio/<id>.LOFI.mp3."""
    import hashlib

    def side(name):  # MARBLE's artist hash: 100 of 116 buckets train, 16 valid
        return "valid" if int(hashlib.sha1(name.lower().encode()).hexdigest(), 16) % 116 >= 100 else "train"

    names = [f"DJ {k}" for k in range(400)]
    t, v = [n for n in names if side(n) == "train"], [n for n in names if side(n) == "valid"]
    mtg = root / "giantsteps-mtg-key-dataset-fd7b8c584f7bd6d720d170c325a6d42c9bf75a6b"
    (mtg / "annotations").mkdir(parents=True)
    (mtg / "md5").mkdir()
    rows = [(101, "D# minor", 2, t[0]), (102, "A major", 2, f"{t[1]}, {v[0]}"), (103, "C minor", 1, t[2]),
            (104, "C minor / F# minor", 2, t[3]), (105, "F minor", 2, t[4]), (106, "G major", 2, t[1])]
    (mtg / "annotations" / "annotations.txt").write_text(
        "ID\tMANUAL KEY\tC\n" + "".join(f"{i}\t{k}\t{c}\n" for i, k, c, _ in rows))
    (mtg / "annotations" / "beatport_metadata.txt").write_text(
        "ID\tARTIST\tTITLE\tMIX\n" + "".join(f"{i}\t{a}\tTrack {i}\tOriginal Mix\n" for i, _, _, a in rows))
    key = root / "giantsteps-key-dataset-c8cb8aad2cb53f165be51ea099d0dc75c64a844f"
    (key / "annotations" / "key").mkdir(parents=True)
    (key / "md5").mkdir()
    for i, k in ((201, "Eb minor"), (202, "A major")):
        (key / "annotations" / "key" / f"{i}.LOFI.key").write_text(k)
    for i in [r[0] for r in rows] + [201, 202]:
        (mtg if i < 200 else key).joinpath("md5", f"{i}.LOFI.md5").write_text("0" * 32)
        if i != 105:  # listed, annotated, its audio never downloaded
            (root / "audio").mkdir(exist_ok=True)
            sf.write(root / "audio" / f"{i}.LOFI.mp3", tone(i % 7, seconds=1.0), 16000, format="MP3")
    return root


def test_giantsteps_raw_downloads_are_split_by_artist_and_cut_into_clips(tmp_path, monkeypatch):
    from modalities.audio import benchmarks
    from modalities.audio.benchmarks import read_giantsteps

    root = giantsteps_raw_folder(tmp_path)
    bm = read_giantsteps(root, clip_seconds=0.4)  # 1 s tracks: two whole 0.4 s clips each, the tail dropped
    assert bm.stats.skipped == {"low_confidence": 1, "several_keys": 1, "missing_audio": 1}
    song = {g: (s, KEY_CLASSES[int(k)]) for g, s, k in zip(bm.groups, bm.split, bm.targets, strict=True)}
    assert song == {"101": ("train", "Eb minor"), "102": ("valid", "A major"),  # 102 has a valid co-artist
                    "106": ("valid", "G major"),  # its artist shares 102 with a valid one: valid too
                    "201": ("test", "Eb minor"), "202": ("test", "A major")}
    assert bm.offsets[:2] == [0.0, 0.4] and bm.groups[:2] == ["101", "101"] and bm.clip_seconds == 0.4
    monkeypatch.setitem(benchmarks.READERS, "giantsteps-key", lambda r: read_giantsteps(r, clip_seconds=0.4))
    enc, out = audio_encoder_folder(tmp_path), tmp_path / "probe"
    assert cli_main(["eval", "audio-probe", "--encoder", str(enc), "--task", "giantsteps-key", "--data", str(root),
                     "--out", str(out), *QUICK]) == 0
    r = json.loads((out / "probe.json").read_text())
    assert r["clips"] == {"train": 2, "valid": 4, "test": 4} and r["skipped"]["records"]["several_keys"] == 1
    ann = next(root.glob("giantsteps-mtg-key-dataset*")) / "annotations" / "annotations.txt"
    ann.write_text(ann.read_text().replace("A major", "A lydian"))
    with pytest.raises(ValueError, match=r"annotations.txt, line 3: field 'MANUAL KEY' is 'A lydian'"):
        read_giantsteps(root, clip_seconds=0.4)
