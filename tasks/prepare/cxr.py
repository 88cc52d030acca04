"""CXR data into the cache: ``tessera prepare cxr``.

    tessera prepare cxr                      # -> $TESSERA_CACHE/cxr (about 10 s; 1.1 MB + 7 MB)

Copies the real CXR data this machine can get: the Indiana University / OpenI reports
(``NLMCXR_reports.tgz``, 3,955 XML files, CC BY-NC-ND 4.0) from the torchxrayvision 1.5.7 wheel,
and the real PA chest radiograph ``RG1_UNCR.dcm`` (MONOCHROME1) from the pydicom-data wheel. Both
come from PyPI through ``pip download``; each file is written under a ``.partial`` name and
renamed, so an interrupted copy leaves nothing half-written and a rerun copies only what is
missing. The report data modules call ``openi_archive`` from ``prepare_data``, so `tessera fit`
needs no step before it; this job is for reading the counts, or for filling the cache ahead of
an offline run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs import UserError, job

PYDICOM_DATA = ("pydicom-data==1.0.0", "data_store/data/RG1_UNCR.dcm")  # (requirement, member in its wheel)


def radiograph_path(cache: Path | None = None) -> Path:
    """RG1_UNCR.dcm in the cache, copied out of the pydicom-data wheel on first use."""
    from ..data.fetch import default_cache_dir, fetch_from_wheel

    cache = Path(cache) if cache else default_cache_dir()
    return fetch_from_wheel(*PYDICOM_DATA, cache / "cxr" / "RG1_UNCR.dcm")


def prepare_cxr(cache: Path | None = None, radiograph: bool = True) -> dict:
    """Copy the OpenI reports (and the radiograph) into ``cache``/cxr; returns what was read."""
    from modalities.cxr import read_image, read_openi
    from modalities.stats import ReadStats

    from ..data.cxr import openi_archive

    tgz = openi_archive(cache)
    stats = ReadStats(unit="reports")
    try:
        reports = list(read_openi(tgz, stats))
    except ValueError as e:  # a cached copy that is not the archive (edited, or from elsewhere)
        raise UserError(f"{str(e).splitlines()[0]}; delete {tgz} and run `tessera prepare cxr` again") from None
    out = {"reports": str(tgz), "read": str(stats), "kept": len(reports),
           "with_findings": sum(bool(r.findings) for r in reports),
           "with_impression": sum(bool(r.impression) for r in reports),
           "with_both": sum(bool(r.findings and r.impression) for r in reports)}
    print(f"{tgz}: {stats}")
    print(f"  with findings {out['with_findings']}, with impression {out['with_impression']}, "
          f"with both {out['with_both']}")
    if radiograph:
        dcm = radiograph_path(cache)
        img = read_image(dcm)
        out.update(radiograph=str(dcm), radiograph_shape=list(img.shape))
        print(f"{dcm}: {img.shape[0]}x{img.shape[1]} radiograph read (MONOCHROME1 inverted)")
    return out


@job("prepare", "cxr", help="copy the OpenI reports and a real chest radiograph (PyPI wheels) into the cache",
     example="tessera prepare cxr")
def prepare(args: argparse.Namespace) -> int:
    """Copy the OpenI / Indiana University reports (torchxrayvision 1.5.7 wheel) and the PA chest
    radiograph RG1_UNCR.dcm (pydicom-data wheel) into <cache>/cxr, and print what they hold.
    Training does this by itself on first use; run it to fill the cache ahead of time."""
    cache = Path(args.cache).expanduser() if args.cache else None
    if cache is not None and cache.exists() and not cache.is_dir():
        raise UserError(f"--cache {cache} is a file; give a folder (default: $TESSERA_CACHE or ~/.cache/tessera)")
    try:
        prepare_cxr(cache, radiograph=not args.no_radiograph)
    except RuntimeError as e:  # pip could not fetch a wheel (offline, no PyPI)
        raise UserError(str(e).splitlines()[0]) from None
    return 0


@prepare.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="cache folder (default: $TESSERA_CACHE or ~/.cache/tessera); files go to <cache>/cxr")
    p.add_argument("--no-radiograph", action="store_true", help="only the reports (skip RG1_UNCR.dcm)")
