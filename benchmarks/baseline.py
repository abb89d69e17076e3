"""An earlier rdask, timed beside the current one (``run.py --baseline REV``).

:func:`materialise` extracts commit ``REV`` of this repository with ``git
archive`` into ``DIR/baseline-REV/`` (reused while it holds the same
commit).  A baseline row runs the same command as the rdask row it
compares with, with ``PYTHONPATH`` set to that directory: the console
script and every dependency come from the benchmark's venv, only the
``rdask`` package is REV's (``PYTHONPATH`` precedes site-packages, and the
editable install's finder is the last of ``sys.meta_path``).  If REV's
``pyproject.toml`` names another entry point for ``rdask`` than the
installed one, a console script for REV's entry point is written into the
checkout (``bin/rdask``) and used instead.  ``checks.loads_from`` proves,
in each check run, which ``rdask`` the row really imported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: Marks a complete extraction; holds the full commit hash.
STAMP = ".rdask-baseline-commit"


@dataclass(frozen=True)
class Baseline:
    """A checkout of an earlier rdask and how to run it."""

    rev: str
    """REV as given on the command line (names the rows: ``rdask REV``)."""
    commit: str
    path: Path
    """The checkout's root: what ``PYTHONPATH`` is set to."""
    entry_point: str
    """REV's ``rdask`` console script, ``module:function``."""
    script: Path | None
    """A console script written for REV's entry point, when the installed
    one names another; ``None`` runs the installed script."""

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """Environment of a baseline run: ``PYTHONPATH`` first, then any already set."""
        rest = os.environ.get("PYTHONPATH")
        return (("PYTHONPATH", os.pathsep.join([str(self.path), *([rest] if rest else [])])),)

    def describe(self) -> str:
        """One line for the run's header."""
        how = f"console script {self.script}" if self.script else "the installed console script"
        return (
            f"baseline: rdask {self.rev} = commit {self.commit[:12]} in {self.path} "
            f"(PYTHONPATH; {how}, entry point {self.entry_point})"
        )


def materialise(rev: str, workdir: Path, repo: Path, rdask_script: str) -> Baseline:
    """Extract ``rev`` of ``repo`` under ``workdir`` (unless already there) and describe it.

    Raises
    ------
    RuntimeError
        If ``rev`` is not a commit of ``repo`` or holds no ``rdask`` package.
    """
    proc = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = proc.stdout.strip()
    if proc.returncode != 0 or not commit:
        raise RuntimeError(f"--baseline {rev}: not a commit of {repo}")
    path = workdir / f"baseline-{re.sub(r'[^A-Za-z0-9._-]+', '-', rev)}"
    stamp = path / STAMP
    if not (stamp.exists() and stamp.read_text().strip() == commit):
        _extract(repo, commit, path)
    if not (path / "rdask" / "__init__.py").exists():
        raise RuntimeError(f"--baseline {rev}: no rdask package in commit {commit[:12]}")
    entry = _entry_point(path / "pyproject.toml")
    installed = _installed_entry_point()
    script = None
    if entry != installed:
        script = _write_script(path / "bin" / "rdask", entry, interpreter(rdask_script))
    return Baseline(rev, commit, path, entry, script)


def _extract(repo: Path, commit: str, path: Path) -> None:
    """``git archive commit`` into ``path`` (replacing it), then write the stamp."""
    partial = path.with_name(path.name + ".partial")
    for stale in (partial, path):
        shutil.rmtree(stale, ignore_errors=True)
    partial.mkdir(parents=True)
    with subprocess.Popen(
        ["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=subprocess.PIPE
    ) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(partial, filter="data")
    if proc.returncode != 0:
        raise RuntimeError(f"git archive {commit[:12]} failed ({proc.returncode})")
    (partial / STAMP).write_text(commit + "\n")
    partial.rename(path)


def _entry_point(pyproject: Path) -> str:
    """``[project.scripts] rdask`` of a ``pyproject.toml`` ('' if none)."""
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return str(project.get("scripts", {}).get("rdask", ""))


def _installed_entry_point() -> str:
    """The ``rdask`` console script's entry point in this interpreter's environment."""
    found = metadata.entry_points(group="console_scripts", name="rdask")
    return next(iter(found)).value if found else ""


def interpreter(script: str) -> str:
    """The interpreter of a console script (its ``#!`` line), else this one."""
    try:
        with open(script, "rb") as fh:
            line = fh.readline()
        if line.startswith(b"#!"):
            return line[2:].split()[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    return sys.executable


def _write_script(path: Path, entry: str, python: str) -> Path:
    """A console script like pip's for ``module:function`` ``entry``."""
    module, _, func = entry.partition(":")
    if not module or not func:
        raise RuntimeError(f"baseline entry point {entry!r} is not module:function")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{python}\nimport sys\nfrom {module} import {func}\n"
        f"if __name__ == '__main__':\n    sys.exit({func}())\n"
    )
    path.chmod(0o755)
    return path
