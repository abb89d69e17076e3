"""The ``rdask`` command as the tests run it: found beside this Python (the
venv's), started with SIGINT at its default whatever the suite inherited,
and its one-line errors checked one way."""

from __future__ import annotations

import os
import subprocess
import sys

#: The ``rdask`` console script of the Python running the tests.
RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")

#: Runs ``argv[1:]`` with SIGINT ignored, as a shell starts a background job
#: (exec keeps an ignored signal ignored).
_IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                    "os.execv(sys.argv[1], sys.argv[1:])")


def argv(*args, sigint_ignored: bool = False) -> list[str]:
    """The command line of ``rdask ARGS...`` (through a launcher that
    ignores SIGINT when ``sigint_ignored``)."""
    command = [RDASK, *map(str, args)]
    return [sys.executable, "-c", _IGNORING_SIGINT, *command] if sigint_ignored else command


def run(*args, env=None, cwd=None, timeout: float = 300, preexec_fn=None) -> subprocess.CompletedProcess:
    """``rdask ARGS...`` to completion, output captured as text."""
    return subprocess.run(argv(*args), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, preexec_fn=preexec_fn)


def start(*args, env=None, cwd=None, sigint_ignored: bool = False, preexec_fn=None) -> subprocess.Popen:
    """``rdask ARGS...`` as a child process, stdout and stderr captured as text."""
    return subprocess.Popen(argv(*args, sigint_ignored=sigint_ignored), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, preexec_fn=preexec_fn)


def one_line(stderr: str) -> str:
    """The single line ``stderr`` must be (no traceback)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed run's one ``rdask: error: ...`` line, holding every needle."""
    assert proc.returncode not in (0, None), proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("rdask: error: "), line
    for n in needles:
        assert n in line, (n, line)
    return line
