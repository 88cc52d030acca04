"""`tessera prepare cxr` (tasks/prepare/cxr.py): the reports already in the cache are read, not
fetched again; a bad --cache or option is one line on stderr with exit status 2."""

from cxr_fixtures import write_reports, write_tgz

from tasks.cli import main as tessera


def test_prepare_reads_the_archive_already_in_the_cache(tmp_path, capsys):
    reports = write_reports(tmp_path / "xml", n=120)
    cache = tmp_path / "cache"
    (cache / "cxr").mkdir(parents=True)
    write_tgz(reports, cache / "cxr" / "NLMCXR_reports.tgz")  # present: nothing is downloaded
    assert tessera(["prepare", "cxr", "--cache", str(cache), "--no-radiograph"]) == 0
    out = capsys.readouterr().out
    assert "120 reports" in out and "with both 120" in out


def test_prepare_into_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert tessera(["prepare", "cxr", "--cache", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(tmp_path / "file") in err


def test_prepare_unknown_option_exits_2(capsys):
    assert tessera(["prepare", "cxr", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--bogus" in err.strip().splitlines()[-1]


def test_a_corrupt_archive_in_the_cache_is_named_in_one_line(tmp_path, capsys):
    (tmp_path / "cxr").mkdir()
    (tmp_path / "cxr" / "NLMCXR_reports.tgz").write_bytes(b"half a download")
    assert tessera(["prepare", "cxr", "--cache", str(tmp_path), "--no-radiograph"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "NLMCXR_reports.tgz is not a readable tar archive" in err and "delete" in err
