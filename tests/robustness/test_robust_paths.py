"""Every path option of every `tessera eval`, `tessera prepare`, `embed`, `export` and `import` given a path
that does not exist, a file of binary garbage, or an empty folder: status 2, one line naming the path, no
traceback. Options that need a trained model of a kind these tests cannot make in milliseconds (a dual tower,
a fine-tuned bug detector, a MERT teacher) are given their other paths only."""

from __future__ import annotations

import shutil

import pytest
from materials import (
    RECSYS_GOOD,
    audio_encoder_folder,
    code_encoder_folder,
    garbage,
    openi_folder,
    recsys_encoder_folder,
    text_encoder_folder,
    text_run,
    wav_bytes,
)
from verdict import assert_user_error, run

KINDS = {
    "missing": lambda p: None,
    "garbage-file": lambda p: p.write_bytes(garbage(300)),
    "empty-folder": lambda p: p.mkdir(),
}


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    t = tmp_path_factory.mktemp("good")
    text = text_encoder_folder(t / "text-enc")
    shutil.copytree(text, t / "text-enc-no-tokenizer")
    (t / "text-enc-no-tokenizer" / "tokenizer.json").unlink()
    bench = t / "bench" / "variable_misuse"
    bench.mkdir(parents=True)
    for split in ("train", "valid", "eval", "test"):
        (bench / f"{split}.jsonl").write_text("")
    (t / "f.py").write_text("def f(x):\n    return x\n")
    (t / "tone.wav").write_bytes(wav_bytes([1000 * (i % 7) for i in range(4800)]))
    (t / "r.data").write_text(RECSYS_GOOD)
    (t / "manifests").mkdir()
    (t / "manifests" / "python100k_train.txt").write_text("data/a.py\n")
    (t / "manifests" / "python50k_eval.txt").write_text("data/a.py\n")
    return {"t": t, "audio": audio_encoder_folder(t / "audio-enc"), "text": text,
            "text-no-tok": t / "text-enc-no-tokenizer", "recsys": recsys_encoder_folder(t / "rec-enc"),
            "code": code_encoder_folder(t / "code-enc"), "run": text_run(t / "run"),
            "reports": openi_folder(t / "reports")}


P = "{P}"
ROWS = {
    "eval audio-probe --encoder": lambda g, o: ["eval", "audio-probe", "--encoder", P, "--out", o],
    "eval audio-probe --notes": lambda g, o: ["eval", "audio-probe", "--encoder", g["audio"], "--notes", P,
                                              "--out", o, "--quiet"],
    "eval audio-probe --keys": lambda g, o: ["eval", "audio-probe", "--encoder", g["audio"], "--keys", P,
                                             "--out", o, "--quiet"],
    "eval audio-probe --data": lambda g, o: ["eval", "audio-probe", "--encoder", g["audio"], "--task", "gtzan",
                                             "--data", P, "--out", o, "--quiet"],
    "eval code --benchmark": lambda g, o: ["eval", "code", "--benchmark", P, "--init-from", g["code"], "--out", o],
    "eval code --init-from": lambda g, o: ["eval", "code", "--benchmark", g["t"] / "bench", "--init-from", P,
                                           "--out", o],
    "eval code --tokenizer": lambda g, o: ["eval", "code", "--benchmark", g["t"] / "bench", "--tokenizer", P,
                                           "--init-from", g["code"], "--out", o],
    "eval code --config": lambda g, o: ["eval", "code", "--benchmark", g["t"] / "bench", "--config", P,
                                        "--models", "scratch", "--out", o],
    "eval code-misuse --mlm": lambda g, o: ["eval", "code-misuse", "--mlm", P, "--benchmark", g["t"] / "bench",
                                            "--out", o],
    "eval code-misuse --benchmark": lambda g, o: ["eval", "code-misuse", "--mlm", g["run"], "--benchmark", P,
                                                  "--tokenizer", g["code"], "--out", o],
    "eval code-misuse --tokenizer": lambda g, o: ["eval", "code-misuse", "--mlm", g["run"], "--benchmark",
                                                  g["t"] / "bench", "--tokenizer", P, "--out", o],
    "eval code-predict --model": lambda g, o: ["eval", "code-predict", "--model", P, g["t"] / "f.py", "--out", o],
    "eval cxr-clip RUN": lambda g, o: ["eval", "cxr-clip", P, "--reports", g["reports"], "--out", o],
    "eval cxr-retrieval FOLDER": lambda g, o: ["eval", "cxr-retrieval", P, "--reports", g["reports"], "--out", o],
    "eval cxr-retrieval --reports": lambda g, o: ["eval", "cxr-retrieval", "--reports", P, "--out", o],
    "eval cxr-retrieval --tokenizer": lambda g, o: ["eval", "cxr-retrieval", g["text-no-tok"], "--tokenizer", P,
                                                    "--reports", g["reports"], "--out", o],
    "eval cxr-towers --reports": lambda g, o: ["eval", "cxr-towers", "--reports", P, "--out", o],
    "eval recsys --run": lambda g, o: ["eval", "recsys", "--run", P, "--data", g["t"] / "r.data", "--out", o],
    "eval recsys --data": lambda g, o: ["eval", "recsys", "--run", g["recsys"], "--data", P, "--out", o],
    "prepare audio-codes AUDIO": lambda g, o: ["prepare", "audio-codes", P, "--run", g["run"], "--out", o],
    "prepare audio-codes --run": lambda g, o: ["prepare", "audio-codes", g["t"] / "tone.wav", "--run", P, "--out", o],
    "prepare audio-codes --encodec": lambda g, o: ["prepare", "audio-codes", g["t"] / "tone.wav", "--encodec", P,
                                                   "--out", o],
    "prepare code-benchmark --corpus": lambda g, o: ["prepare", "code-benchmark", "--corpus", P, "--out", o],
    "prepare code-benchmark --extra-train": lambda g, o: ["prepare", "code-benchmark", "--corpus", P,
                                                          "--extra-train", P, "--out", o],
    "prepare code-py150 --manifests": lambda g, o: ["prepare", "code-py150", "--manifests", P, "--root", g["t"],
                                                    "--out", o],
    "prepare code-py150 --root": lambda g, o: ["prepare", "code-py150", "--manifests", g["t"] / "manifests",
                                               "--root", P, "--out", o],
    "prepare code-tokenizer --corpus": lambda g, o: ["prepare", "code-tokenizer", "--corpus", P, "--out", o],
    "prepare text --corpus": lambda g, o: ["prepare", "text", "--corpus", P, "--cache", o],
    "prepare cxr --cache": lambda g, o: ["prepare", "cxr", "--cache", P, "--no-radiograph"],
    "prepare ml100k --cache": lambda g, o: ["prepare", "ml100k", "--cache", P],
    "embed --encoder": lambda g, o: ["embed", "--encoder", P, g["t"] / "f.py", "--out", o],
    "embed INPUTS": lambda g, o: ["embed", "--encoder", g["code"], P, "--out", o, "--quiet"],
    "export SRC": lambda g, o: ["export", P, o],
    "import SRC": lambda g, o: ["import", P, o],
}
# a cache folder that does not exist yet is created (not a mistake); a MERT teacher is checked before the audio
NOT_A_MISTAKE = {("prepare cxr --cache", "missing"), ("prepare cxr --cache", "empty-folder"),
                 ("prepare ml100k --cache", "missing"), ("prepare ml100k --cache", "empty-folder"),
                 ("prepare audio-codes AUDIO", "garbage-file")}
XFAIL: dict[tuple[str, str], str] = {}  # (option, kind) -> the defect, in a file another helper owns


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("option", list(ROWS))
def test_a_bad_path_is_one_line_naming_it(g, tmp_path, capsys, option, kind, request):
    if (option, kind) in NOT_A_MISTAKE:
        pytest.skip("not a mistake: see NOT_A_MISTAKE")
    if (option, kind) in XFAIL:
        request.applymarker(pytest.mark.xfail(strict=True, reason=XFAIL[option, kind]))
    bad = tmp_path / f"bad-{kind}"
    KINDS[kind](bad)
    argv = [str(a).replace(P, str(bad)) for a in ROWS[option](g, tmp_path / "out")]
    rc, _, err = run(capsys, argv)
    assert_user_error(rc, err, bad)
