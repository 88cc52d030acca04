"""Real CXR benchmarks in their released layouts, on tiny files the tests write in the exact
schemas: CheXpert's CSV (uncertainty policy, 5x200), MIMIC-CXR's sectioned reports, split and
label CSVs and the JPG tree; `tessera eval cxr-zeroshot` / `cxr-image-retrieval` on real image
folders; bad rows and images counted and named; a truncated DICOM called truncated."""

import json

import numpy as np
import pytest
import torch
from cxr_fixtures import dual_tower_folder, openi_xml, write_reports
from PIL import Image

from modalities.cxr.chexpert import (
    COMPETITION,
    OBSERVATIONS,
    LabelStats,
    five_by_200,
    read_chexpert,
)
from modalities.cxr.mimic import read_split_csv, read_study_labels, report_from_text, section_report
from tasks.cli import main as tessera

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBSERVATIONS)
MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  None.

 FINDINGS:

 The heart is mildly enlarged.  Small left pleural effusion.

 IMPRESSION:

 Cardiomegaly and small left effusion.
"""


def _png(path, seed=0, size=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(path)
    return path


def _row(path, view="Frontal", age="60", **labels):
    vals = [{1: "1.0", 0: "0.0", -1: "-1.0", None: ""}[labels.get(n.replace(" ", "_"))] for n in OBSERVATIONS]
    return ",".join([path, "Female", age, view, "PA" if view == "Frontal" else ""] + vals)


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    reports = write_reports(tmp_path_factory.mktemp("openi") / "xml", n=12)
    return dual_tower_folder(tmp_path_factory.mktemp("dual") / "clip-run" / "encoder", reports, vocab_size=120,
                             image_size=16)


def chexpert_root(tmp_path, per_class=2):
    """A CheXpert-v1.0-small folder: train.csv with per_class eligible 5x200 images per class and
    ineligible ones (two positives, an uncertain other, lateral), valid.csv, the JPGs."""
    root = tmp_path / "CheXpert-v1.0-small"
    rows, k = [], 0

    def add(csv_rows, split, **kw):
        nonlocal k
        k += 1
        rel = f"CheXpert-v1.0-small/{split}/patient{k:05d}/study1/view1_{kw.get('view', 'Frontal').lower()}.jpg"
        _png(root / rel.split("/", 1)[1], seed=k)
        csv_rows.append(_row(rel, **kw))

    for name in COMPETITION:
        key = name.replace(" ", "_")
        for _ in range(per_class):
            add(rows, "train", **{key: 1, "Support_Devices": 0})
    add(rows, "train", Atelectasis=1, Edema=1)  # two positives: not in 5x200
    add(rows, "train", Cardiomegaly=1, Pneumonia=-1)  # an uncertain other observation: not in 5x200
    add(rows, "train", view="Lateral", Edema=1)  # lateral: not in 5x200
    (root / "train.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    valid = []
    for j in range(6):
        add(valid, "valid", Cardiomegaly=j % 2, Edema=[1, 0, -1][j % 3], Pleural_Effusion=1 - j % 2)
    valid.append("CheXpert-v1.0-small/valid/patient99999/study1/view1_frontal.jpg,Male,70,Side,AP," + ",".join([""] * 14))
    (root / "valid.csv").write_text("\n".join([HEADER, *valid]) + "\n")
    return root


def test_uncertainty_policy_is_explicit_and_blank_is_negative(tmp_path):
    root = chexpert_root(tmp_path)
    stats = LabelStats()
    images = list(read_chexpert(root / "valid.csv", stats))
    assert len(images) == 6 and stats.skipped == {"Frontal/Lateral: 'Side' is neither Frontal nor Lateral": 1}
    assert "valid.csv:8: column 'Frontal/Lateral'" in stats.examples[0]
    uncertain = images[2].labels  # Edema -1, Cardiomegaly 0, Pleural Effusion 1, the rest blank
    names = ["Edema", "Cardiomegaly", "Pleural Effusion", "Fracture"]
    assert uncertain.target("ignore", names) == ([0.0, 0.0, 1.0, 0.0], [False, True, True, True])
    assert uncertain.target("ones", names) == ([1.0, 0.0, 1.0, 0.0], [True] * 4)
    assert uncertain.target("zeros", names) == ([0.0, 0.0, 1.0, 0.0], [True] * 4)
    with pytest.raises(ValueError, match="uncertainty policy"):
        uncertain.target("guess")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n" + _row("a.jpg", age="old") + "\n" + _row("b.jpg").replace(",,", ",2.0,", 1) + "\n")
    with pytest.raises(ValueError, match="no usable CheXpert row; first: .*bad.csv:2: column 'Age'"):
        list(read_chexpert(bad, LabelStats()))


def test_five_by_200_keeps_frontal_images_with_exactly_one_competition_positive(tmp_path):
    images = list(read_chexpert(chexpert_root(tmp_path) / "train.csv"))
    chosen = five_by_200(images, per_class=2, seed=0)
    assert sorted(k for _, k in chosen) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    for im, k in chosen:
        assert im.view == "Frontal" and im.labels.positives(COMPETITION) == [COMPETITION[k]]
        assert all(v in (0, None) for n, v in im.labels.raw.items() if n not in COMPETITION)
    assert five_by_200(images, 2, seed=0) == chosen
    with pytest.raises(ValueError, match="only 2 frontal images have Atelectasis"):
        five_by_200(images, per_class=3)


def test_mimic_reports_are_sectioned_as_the_release_parser_does():
    sec = section_report(MIMIC_REPORT)
    assert sec["findings"] == "The heart is mildly enlarged. Small left pleural effusion."
    assert sec["impression"] == "Cardiomegaly and small left effusion." and sec["comparison"] == "None."
    merged = section_report(" FINAL REPORT\n INDICATION: x\n \n FINDINGS AND IMPRESSION: No change.\n")
    assert merged["impression"] == "No change." and "findings" not in merged
    # neither findings nor impression: the last paragraph stands in, and the report says so
    rep = report_from_text("s1", " FINAL REPORT\n WET READ: ___\n \n Lungs are clear.\n")
    assert rep.impression == "Lungs are clear." and rep.indication == "last_paragraph" and rep.findings == ""


def mimic_root(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    rows = ["dicom_id,study_id,subject_id,split"]
    labels = ["subject_id,study_id," + ",".join(OBSERVATIONS)]
    k = 0
    for split, n in (("train", 4), ("validate", 2), ("test", 3)):
        for _ in range(n):
            k += 1
            subject, study, dicom = f"1000{k:04d}", f"5000{k:04d}", f"d{k:03d}"
            _png(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", seed=k)
            text = MIMIC_REPORT if k % 2 else MIMIC_REPORT.replace("mildly enlarged", "normal in size")
            (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").write_text(text)
            rows.append(f"{dicom},{study},{subject},{split}")
            vals = {"Cardiomegaly": "1.0" if k % 2 else "0.0", "Edema": "-1.0", "Pleural Effusion": "1.0"}
            labels.append(f"{subject},{study}," + ",".join(vals.get(n, "") for n in OBSERVATIONS))
    rows += ["dx,50009999,10009999,test", "dy,12x,10000001,train", "dz,50000001,10000001,holdout"]  # no image; bad id; bad split
    (root / "files" / "p10" / "p10009999").mkdir(parents=True)
    (root / "files" / "p10" / "p10009999" / "s50009999.txt").write_text(MIMIC_REPORT)  # its report is there
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(rows) + "\n")
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text("\n".join(labels) + "\n")
    return root


def test_mimic_split_and_labels_csv_and_data_module_on_the_official_split(tmp_path):
    from tasks.data.cxr_mimic import MimicCXRDataModule

    root = mimic_root(tmp_path)
    stats = LabelStats()
    rows = read_split_csv(root / "mimic-cxr-2.0.0-split.csv", stats)
    assert len(rows) == 10 and {r.split for r in rows} == {"train", "val", "test"}
    assert set(stats.skipped) == {"study_id: '12x' is not a number", "split: 'holdout' is not train, validate or test"}
    labels = read_study_labels(root / "mimic-cxr-2.0.0-chexpert.csv")
    assert labels["50000001"].raw["Edema"] == -1 and labels["50000001"].raw["Fracture"] is None
    dm = MimicCXRDataModule(str(root), uncertainty="ignore", image_size=16, batch_size=4, vocab_size=60,
                            cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 3)
    assert dm.read["skipped_missing_image"] == 1 and dm.read["skipped_no_report"] == 0
    assert dm.stats["images"].startswith("real files")
    batch = dm.count_bad_images(dm.collate([dm.train_set[i] for i in range(4)]))
    assert batch["images"].shape == (4, 1, 16, 16) and batch["labels"].shape == (4, 14)
    edema = OBSERVATIONS.index("Edema")
    assert not batch["label_mask"][:, edema].any() and batch["label_mask"][:, 0].all()  # uncertain Edema ignored
    assert batch["labels"][:, OBSERVATIONS.index("Cardiomegaly")].tolist() == [1.0, 0.0, 1.0, 0.0]
    ones = MimicCXRDataModule(str(root), uncertainty="ones", image_size=16, vocab_size=60, cache_dir=str(tmp_path / "cache"))
    ones.setup("fit")
    assert ones.collate([ones.val_set[0]])["labels"][0, edema] == 1.0


def test_eval_cxr_zeroshot_scores_real_chexpert_images_5x200_and_auroc(tmp_path, dual, capsys):
    root = chexpert_root(tmp_path)
    (root / "valid" / "patient00016" / "study1" / "view1_frontal.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    out = tmp_path / "zs"
    assert tessera(["eval", "cxr-zeroshot", str(dual), "--chexpert", str(root), "--five-by-200", "--per-class", "2",
                    "--out", str(out)]) == 0
    res = json.loads((out / "zeroshot_5x200.json").read_text())
    assert res["images_are"] == "real files" and res["data"]["images_scored"] == 10
    assert 0.0 <= res["accuracy"] <= 1.0 and sum(map(sum, res["confusion"]["counts"])) == 10
    assert len(res["data"]["five_by_200"]["paths"]) == 10
    assert tessera(["eval", "cxr-zeroshot", str(dual), "--chexpert", str(root), "--out", str(out)]) == 0
    res = json.loads((out / "zeroshot.json").read_text())
    assert res["uncertainty"] == "ignore" and res["data"]["skipped_unreadable_image"] == 1
    assert res["data"]["read"]["skipped"] == {"Frontal/Lateral: 'Side' is neither Frontal nor Lateral": 1}
    assert res["counts"]["Edema"]["left_out_uncertain"] >= 1 and "Cardiomegaly" in res["auroc"]
    assert "Atelectasis" in res["not_scored_one_class_only"]
    assert "1 unreadable image" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["no_root", "both", "bad_csv", "five_by_200_mimic"])
def test_eval_cxr_zeroshot_bad_input_is_one_line_and_exit_2(case, tmp_path, dual, capsys):
    args = ["eval", "cxr-zeroshot", str(dual), "--out", str(tmp_path / "o")]
    if case == "no_root":
        args += ["--chexpert", str(tmp_path / "nope")]
    elif case == "both":
        args += ["--chexpert", str(tmp_path), "--mimic", str(tmp_path)]
    elif case == "bad_csv":
        (tmp_path / "valid.csv").write_text("Path,Sex\nx.jpg,F\n")
        args += ["--chexpert", str(tmp_path)]
    else:
        args += ["--mimic", str(tmp_path), "--five-by-200"]
    assert tessera(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    if case == "bad_csv":
        assert "valid.csv" in err and "Age" in err


def test_eval_cxr_image_retrieval_on_openi_pngs_and_the_mimic_jpg_tree(tmp_path, dual, capsys):
    xml, png = tmp_path / "xml", tmp_path / "png"
    xml.mkdir()
    texts = ["Heart size normal. Lungs clear.", "Cardiomegaly. Small effusion.", "Right lower lobe opacity."]
    for k in range(6):
        (xml / f"{k + 1}.xml").write_text(openi_xml(f"CXR{k + 1}", texts[k % 3], "Impression."))
        if k < 5:
            _png(png / f"CXR{k + 1}_IM-1.png", seed=k)
    (png / "CXR5_IM-1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "ret"
    assert tessera(["eval", "cxr-image-retrieval", str(dual), "--layout", "openi", "--images", str(png),
                    "--reports", str(xml), "--split", "all", "--out", str(out)]) == 0
    res = json.loads((out / "image_retrieval.json").read_text())
    assert res["data"]["skipped_report_without_image"] == 1 and res["data"]["skipped_unreadable_image"] == 1
    assert res["data"]["images_scored"] == 4 and res["data"]["distinct_reports"] == 3
    assert res["image_to_report"]["recall@10"] == 1.0 and 0 <= res["report_to_image"]["recall@1"] <= 1
    root = mimic_root(tmp_path)
    assert tessera(["eval", "cxr-image-retrieval", str(dual), "--layout", "mimic", "--images", str(root),
                    "--out", str(out)]) == 0
    res = json.loads((out / "image_retrieval.json").read_text())
    assert res["data"]["images_scored"] == 3 and res["data"]["read"]["skipped_missing_image"] == 1
    assert tessera(["eval", "cxr-image-retrieval", str(dual), "--layout", "mimic", "--images", str(tmp_path / "no"),
                    "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--images" in err[0]


def test_a_truncated_dicom_is_called_truncated_not_a_missing_codec(tmp_path):
    from test_cxr import _dicom

    from modalities.cxr import read_image

    path = _dicom(tmp_path / "full.dcm", np.arange(64 * 64).reshape(64, 64) % 4000)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(ValueError) as e:
        read_image(cut)
    msg = str(e.value)
    assert "cut.dcm" in msg and "truncated or corrupt" in msg and "pylibjpeg" not in msg and "JPEG" not in msg
    assert torch.as_tensor(read_image(path)).shape == (64, 64)


def test_eval_cxr_zeroshot_on_the_mimic_test_split_leaves_uncertain_labels_out(tmp_path, dual):
    root = mimic_root(tmp_path)
    out = tmp_path / "zs"
    assert tessera(["eval", "cxr-zeroshot", str(dual), "--mimic", str(root), "--split", "test", "--out", str(out)]) == 0
    res = json.loads((out / "zeroshot.json").read_text())
    assert res["data"]["dataset"] == "MIMIC-CXR-JPG" and res["data"]["skipped_study_without_labels"] == 1
    assert res["data"]["images_scored"] == 3 and res["counts"]["Edema"]["left_out_uncertain"] == 3
    assert res["counts"]["Cardiomegaly"] == {"positive": 2, "negative": 1, "left_out_uncertain": 0}  # studies 7, 8, 9
    assert set(res["auroc"]) == {"Cardiomegaly"} and res["uncertainty"] == "ignore"


def test_chexpert_data_module_batches_labels_with_the_policy_mask_and_a_patient_disjoint_val(tmp_path):
    from tasks.data.cxr_mimic import CheXpertDataModule

    root = chexpert_root(tmp_path)
    dm = CheXpertDataModule(str(root), uncertainty="ignore", image_size=16, batch_size=8, val_fraction=0.3)
    dm.setup("fit")
    assert len(dm.sets["train"]) + len(dm.sets["val"]) == 13 and len(dm.sets["val"]) > 0 and len(dm.sets["test"]) == 6
    train_patients = {p.parts[-3] for p in dm.sets["train"].paths}
    assert train_patients.isdisjoint(p.parts[-3] for p in dm.sets["val"].paths)
    batch = next(iter(dm.test_dataloader()))
    edema = OBSERVATIONS.index("Edema")
    assert batch["images"].shape == (6, 1, 16, 16) and batch["labels"].shape == (6, 14)
    assert batch["label_mask"][:, edema].tolist() == [True, True, False, True, True, False]
    assert dm.stats["test"]["skipped"] == {"Frontal/Lateral: 'Side' is neither Frontal nor Lateral": 1}


def _cached_radiograph():
    from tasks.data.fetch import default_cache_dir

    return default_cache_dir() / "cxr" / "RG1_UNCR.dcm"


@pytest.mark.skipif(not _cached_radiograph().is_file(), reason="RG1_UNCR.dcm not in the cache; run tessera prepare cxr")
def test_the_real_radiograph_cut_short_is_called_truncated(tmp_path):
    from modalities.cxr import read_image

    cut = tmp_path / "RG1_cut.dcm"
    cut.write_bytes(_cached_radiograph().read_bytes()[:300_000])
    with pytest.raises(ValueError, match=r"truncated or corrupt: its pixel data holds \d+ of the 7198310 bytes"):
        read_image(cut)
