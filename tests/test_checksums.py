"""The outputs of a fixed set of jobs are those recorded from rdask 0.1.

The proof that a refactor changed no output bytes: every job of
``tests/checksum_jobs.py`` runs again and its digests must equal
``tests/data/checksums.json`` (recorded from rdask 0.1 at commit 4de1f14):
``tiles`` (image structure of every IFD plus every tile's compressed bytes,
in tile-index order), ``file`` (whole-file sha256, COG outputs) and ``meta``
(what rasterio reads). See ``checksum_jobs.py`` for the digests and how to
regenerate the record.
"""

from __future__ import annotations

import checksum_jobs as cj
import pytest

#: Job name -> names of fields the refactor may change on purpose. Lists the
#: metadata the rdask 0.2 core issue changes deliberately: colour
#: interpretation (``colorinterp``, and for a GeoTIFF the IFD fields
#: ``photometric`` / ``extrasamples`` that encode it), per-band tags
#: (``band_tags``), per-band metadata following ``reverse-bands``
#: (``descriptions``, ``scales``, ``offsets``, ``units``, ``band_tags``,
#: ``mask_flags``...), ``focal-mean`` keeping scales and offsets. Names are
#: keys of a digest's ``meta`` or of its per-IFD ``structure``. A job listed
#: here is still held to its exact tile bytes (``tile_data``) and to every
#: field not listed; only the combined ``tiles`` and whole-file hashes,
#: which cover the listed fields too, are not compared.
#: What rdask 0.2's core issue (14) changes on purpose: colour interpretation
#: is written (in a GeoTIFF it is the photometric and extra-samples tags),
#: colour tables and per-band tags are kept, per-band items follow
#: reverse-bands, and focal-mean keeps scales and offsets. Tile bytes must
#: still be equal for every job.
_COLOUR = {"colorinterp", "photometric", "extrasamples"}
INTENDED_META_CHANGES: dict[str, set[str]] = {
    "reverse-bands_rgb": _COLOUR,
    "reverse-bands_rgba_b128": _COLOUR,
    "reverse-bands_masked_b64": _COLOUR | {"descriptions"},
    "reverse-bands_palette": _COLOUR | {"colormaps"},
    "focal-mean_scaled_r2": {"band_tags", "scales", "offsets"},
    "reverse-bands_scaled_uncompressed": {"band_tags", "descriptions", "scales", "offsets", "units"},
    "cog_reverse-bands_masked": _COLOUR | {"descriptions"},
}

RECORD = cj.load_record()


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


@pytest.mark.parametrize("name", [job.name for job in cj.JOBS])
def test_output_as_recorded(name, inputs, tmp_path):
    actual = cj.run_job(cj.JOBS_BY_NAME[name], inputs, tmp_path / "out")
    diffs = cj.differences(RECORD[name], actual, INTENDED_META_CHANGES.get(name, set()))
    assert not diffs, f"{name}: output differs from the recorded one:\n  " + "\n  ".join(diffs)
