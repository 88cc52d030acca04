"""The code corpus: licences, deduplication, package splits; `tessera prepare code-corpus` and its bad inputs."""

import json

import pytest
from code_fixtures import module_source

from modalities.code.corpus import CorpusStats, SourceFile, assign_splits, build_corpus, licence_of
from tasks.cli import main as tessera


class FakeDist:
    def __init__(self, **fields):
        self.metadata = _Meta(fields)


class _Meta(dict):
    def get_all(self, key):
        v = self.get(key)
        return v if isinstance(v, list) else None


def test_licence_classification():
    assert licence_of(FakeDist(**{"License-Expression": "MIT"}))[1]
    assert licence_of(FakeDist(**{"License-Expression": "Apache-2.0 OR BSD-2-Clause"}))[1]
    assert not licence_of(FakeDist(**{"License-Expression": "MPL-2.0 AND MIT"}))[1]
    assert not licence_of(FakeDist(**{"License-Expression": "LGPL-2.1-or-later"}))[1]
    assert licence_of(FakeDist(Classifier=["License :: OSI Approved :: BSD License"]))[1]
    assert not licence_of(FakeDist(Classifier=["License :: Other/Proprietary License"]))[1]
    assert not licence_of(FakeDist())[1]  # unknown: left out


def test_corpus_dedupes_skips_and_splits_by_package(tmp_path):
    files = []
    for p in range(12):
        for k in range(3):
            path = tmp_path / f"pkg{p}_{k}.py"
            path.write_text(module_source(3, offset=p * 3 + k) + f"\nVALUE_{p}_{k} = {k}\n")
            files.append(SourceFile(str(path), f"pkg{p}", "MIT"))
    dup = tmp_path / "dup.py"  # same tokens as pkg0_0, other comments and spacing
    dup.write_text("# another header\n" + (tmp_path / "pkg0_0.py").read_text().replace(" = ", "=") )
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"x = '\xff\n")
    py2 = tmp_path / "py2.py"
    py2.write_text("print 'hello'\n")
    files += [SourceFile(str(dup), "other", "MIT"), SourceFile(str(bad), "other", "MIT"), SourceFile(str(py2), "other", "MIT")]
    stats = CorpusStats()
    rows, summary = build_corpus(files, stats, progress=False)
    assert summary["duplicates_removed"] == 1 and summary["files_kept"] == 36
    assert summary["skipped"]["not decodable"] == 1 and summary["skipped"]["not Python 3 (ast.parse fails)"] == 1
    splits = {}
    for r in rows:
        splits.setdefault(r["package"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())  # no package in two splits
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    assert assign_splits({"a": 5, "b": 1}, seed=1) == assign_splits({"a": 5, "b": 1}, seed=1)


def test_prepare_code_corpus_writes_a_manifest_atomically(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert tessera(["prepare", "code-corpus", "--stdlib-only", "--max-files", "12", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").open()]
    stats = json.loads((out / "stats.json").read_text())
    assert 0 < len(rows) <= 12 and stats["site_packages"] is False and stats["max_files"] == 12
    assert not list(out.glob("*.partial"))  # written under .partial names, then renamed
    assert {r["split"] for r in rows} <= {"train", "valid", "test"}


@pytest.mark.parametrize("case", ["bad max-files", "out is a file", "unknown option"])
def test_prepare_code_corpus_bad_inputs_exit_2_with_one_line(tmp_path, capsys, case):
    out = tmp_path / "corpus"
    args = ["--stdlib-only", "--out", str(out)]
    if case == "bad max-files":
        args, named = [*args, "--max-files", "0"], "--max-files"
    elif case == "out is a file":
        out.write_text("x")
        named = str(out)
    else:
        args, named = [*args, "--bogus"], "--bogus"
    rc = tessera(["prepare", "code-corpus", *args, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err)
    if case != "unknown option":
        assert len(err) == 1
