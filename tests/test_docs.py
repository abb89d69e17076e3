"""The documentation: every code block runs, and the site builds.

Every ```` ```python ```` block of README.md and docs/*.md runs, the blocks
of a page in order and in one namespace; every ```` ```console ```` block
runs each ``$ `` line with bash. Both run in a directory holding the
sample inputs the pages name (``in.tif``, ``dem.tif``...). A block that
cannot run here (a cluster address, real cloud credentials) is preceded by
a line ``% not run: <why>`` (a MyST comment), or ``<!-- not run: <why> -->``
in README.md (GitHub shows ``%`` lines), which the page shows nowhere and
this test requires to give a reason. Then ``sphinx-build -W`` builds the site, as
``make docs`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rasters import synthetic, write

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"(?:^(?:% not run: (?P<why>[^\n]*)|<!-- not run: (?P<html>[^\n]*?) -->)\n)?"
                   r"^```(?P<lang>python|console)\n(?P<body>.*?)^```$", re.M | re.S)
BIN = Path(sys.executable).parent


def blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """``(language, code, why not run)`` of each fenced block of ``page``
    (``None``: it runs)."""
    return [(m["lang"], m["body"], m["why"] if m["why"] is not None else m["html"])
            for m in FENCE.finditer(page.read_text())]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """The inputs the pages name, small: an RGB image, a DEM, red and NIR bands."""
    d = tmp_path_factory.mktemp("docs-samples")
    write(d / "in.tif", synthetic((3, 512, 512), "uint16", seed=1), block=(256, 256))
    dem = (np.add.outer(np.arange(512.0), np.arange(512.0)) / 4 + 100).astype("float32")[None]
    write(d / "dem.tif", dem, block=(256, 256), nodata=-9999.0)
    write(d / "red.tif", synthetic((1, 512, 512), "uint16", seed=2), block=(256, 256))
    write(d / "nir.tif", synthetic((1, 512, 512), "uint16", seed=3), block=(256, 256))
    shutil.copytree(ROOT / "tests" / "data" / "colors", d / "colors")
    return d


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_code_block_runs_or_says_why(page, samples, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(samples, work)
    namespace: dict = {"__name__": "__docs__"}
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for n, (lang, code, why) in enumerate(blocks(page)):
            if why is not None:
                assert why.strip(), f"{page.name} block {n}: 'not run' without a reason"
                continue
            if lang == "python":
                exec(compile(code, f"{page.name}[{n}]", "exec"), namespace)
                continue
            for line in code.splitlines():
                if line.startswith("$ "):
                    proc = subprocess.run(["bash", "-c", line[2:]], capture_output=True, text=True,
                                          env=env, timeout=300)
                    assert proc.returncode == 0, f"{page.name} block {n}: {line}\n{proc.stderr}"
    finally:
        os.chdir(cwd)


def test_the_site_builds_without_warnings(tmp_path):
    shutil.rmtree(ROOT / "docs" / "generated", ignore_errors=True)  # autosummary's, made anew
    proc = subprocess.run([str(BIN / "sphinx-build"), "-W", "--keep-going", "-q", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "html" / "index.html").exists()
    assert (tmp_path / "html" / "api.html").exists()
