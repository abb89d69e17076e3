"""The outputs of a fixed set of jobs are those recorded.

The proof that a refactor changed no output: every job of
``tests/checksum_jobs.py`` runs again and what rdask decides must equal
``tests/data/checksums.json``: the decoded pixels of every IFD, the tile
layout and compression of every IFD, the metadata rasterio reads (the CRS
compared as a CRS; GDAL's own tag domains left out). The compressed bytes
(every tile, whole COG files) are compared too when every library they
depend on (GDAL, PROJ, imagecodecs and its codecs, numba, numpy, tifffile,
rasterio) is the version recorded; otherwise the test says which differ
and compares the rest. See ``checksum_jobs.py`` for the digests and how to
regenerate the record.
"""

from __future__ import annotations

import warnings

import checksum_jobs as cj
import pytest

#: Job name -> names of meta or IFD structure fields a change may alter on
#: purpose, until the record is taken again (then this is empty again). A
#: job listed here is still held to its pixels and to every field not listed.
INTENDED_META_CHANGES: dict[str, set[str]] = {}

RECORD = cj.load_record()
CHANGED = cj.changed_libraries(RECORD)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    paths, prints = cj.make_inputs(tmp_path_factory.mktemp("checksum-inputs"))
    changed = sorted(k for k in prints if prints[k] != RECORD["_inputs"].get(k))
    assert not changed, (
        f"the jobs' inputs themselves differ from those recorded (not rdask's doing): {changed}"
    )
    return paths


def test_record_covers_every_job():
    assert set(cj.JOBS_BY_NAME) == set(RECORD) - {"_about", "_inputs"}
    assert set(INTENDED_META_CHANGES) <= set(cj.JOBS_BY_NAME)
    for name, fields in INTENDED_META_CHANGES.items():
        known = set(RECORD[name]["meta"]) | {f for ifd in RECORD[name]["structure"] for f in ifd}
        assert fields <= known, f"INTENDED_META_CHANGES[{name!r}]: unknown {fields - known}"


def test_record_names_every_library_version():
    assert set(RECORD["_about"]["versions"]) == set(cj.library_versions())


@pytest.mark.parametrize("name", [job.name for job in cj.JOBS])
def test_output_as_recorded(name, inputs, tmp_path):
    job = cj.JOBS_BY_NAME[name]
    actual = cj.run_job(job, inputs, tmp_path / "out")
    if CHANGED:
        warnings.warn(f"{name}: compressed bytes not compared, the libraries differ from the record: "
                      + ", ".join(f"{k} {r} -> {i}" for k, (r, i) in sorted(CHANGED.items())), stacklevel=1)
    diffs = cj.differences(RECORD[name], actual, INTENDED_META_CHANGES.get(name, set()),
                           gdal_levels=bool(job.gdal_levels), same_libraries=not CHANGED)
    assert not diffs, f"{name}: output differs from the recorded one:\n  " + "\n  ".join(diffs)


def test_bytes_count_only_with_the_recorded_libraries_but_pixels_always():
    """What a new codec version may change (the compressed bytes) is not held
    against rdask; what rdask decides (pixels, layout, metadata) always is."""
    import copy

    recorded = RECORD["slope_dem_b256"]
    new_codec = copy.deepcopy(recorded)
    new_codec["tiles"] = new_codec["tile_data"] = "0" * 64
    new_codec["ifd_data"] = ["0" * 64] * len(recorded["ifd_data"])
    assert cj.differences(recorded, new_codec, same_libraries=False) == []
    assert cj.differences(recorded, new_codec, same_libraries=True)
    new_pixels = copy.deepcopy(recorded)
    new_pixels["pixels"][0] = "0" * 64
    assert cj.differences(recorded, new_pixels, same_libraries=False) == [
        "pixels[IFD 0]: the decoded pixels differ"]
    other_spelling = copy.deepcopy(recorded)  # the same CRS, as another PROJ writes it
    from rasterio.crs import CRS

    other_spelling["meta"]["crs"] = CRS.from_epsg(32618).to_wkt(version="WKT2_2019")
    assert cj.differences(recorded, other_spelling, same_libraries=False) == []
