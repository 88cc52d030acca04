"""How a robustness case is judged: a user's bad input is exit status 2 with ONE line on stderr that
names the input, no traceback, and no payload ever runs; or a counted skip (status 0, the count shown)."""

from __future__ import annotations

import os
from pathlib import Path

from materials import PAYLOAD

from tasks.cli import main as tessera


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``tessera argv`` run in-process; an exception escaping main is a failure."""
    PAYLOAD.unlink(missing_ok=True)
    capsys.readouterr()
    os.environ.pop("TESSERA_DEBUG", None)
    rc = tessera([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert not PAYLOAD.exists(), f"a pickle payload ran during tessera {' '.join(map(str, argv))}"
    return rc, out, err


def error_lines(err: str) -> list[str]:
    """stderr lines that are not progress bars (tqdm's ``NN%|`` lines, e.g. transformers' "Loading weights")
    or library warnings (which are not the error)."""
    return [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln and "warnings.warn" not in ln
            and "%|" not in ln
            and not ln.startswith(("Seed set", "GPU available", "TPU available", "HPU available", "💡"))]


def assert_user_error(rc: int, err: str, names: str | Path) -> None:
    lines = error_lines(err)
    assert "Traceback" not in err, err
    assert rc == 2, f"status {rc}, stderr:\n{err}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert str(names) in lines[0], f"the error does not name {names}: {lines[0]}"


def assert_refused_or_counted(rc: int, out: str, err: str, names: str | Path) -> None:
    """A clear one-line error naming the input, or status 0 with the skip counted on stdout."""
    if rc == 0:
        assert "Traceback" not in err
        assert "skipped" in out, f"status 0 but no skip was counted:\n{out}"
        return
    assert_user_error(rc, err, names)


def call_library(fn, *args) -> Exception | None:
    """A library entry point's verdict: None when it returned, else the (expected: ValueError /
    FileNotFoundError) exception it raised; anything else escapes to fail the test."""
    PAYLOAD.unlink(missing_ok=True)
    try:
        fn(*args)
    except (ValueError, FileNotFoundError) as e:
        return e
    finally:
        assert not PAYLOAD.exists(), f"a pickle payload ran in {fn.__qualname__}"
    return None
