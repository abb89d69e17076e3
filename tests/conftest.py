"""Fixtures the test modules share, and the suite's hygiene.

Hygiene: the suite's result must not depend on how it was launched or in
which order its tests run.

* Children of this process start with SIGINT at its default: a shell
  starts a background job (``nohup make test &``) with SIGINT ignored, exec
  keeps an ignored signal ignored, and rdask (rightly) keeps ignoring it,
  so its Ctrl-C tests would pass or fail by how the suite was started. A
  test that wants the ignored case asks for it (``cli.start(...,
  sigint_ignored=True)``).
* Every test starts in the working directory and with the environment the
  session started with: what one test (or the code it drives) changes
  cannot leak into the next. Tests of rdask's own side effects on its
  caller (``test_side_effects.py``) check for them explicitly.

Fixtures: ``moto`` (moto's S3 server on 127.0.0.1, one per session) and
``s3`` (that server with one empty bucket, ``servers.BUCKET``, and this
process's environment, which CLI runs and spawned workers inherit,
pointing at it with the credentials only there).
"""

from __future__ import annotations

import os
import signal

import pytest
from servers import BUCKET, SECRET, S3Server, use_s3

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _same_start_for_every_test():
    """Put back the working directory and environment a test changed."""
    cwd, environ = os.getcwd(), dict(os.environ)
    yield
    if os.getcwd() != cwd:
        os.chdir(cwd)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="session")
def moto():
    server = S3Server(secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def s3(moto, monkeypatch, tmp_path):
    """moto with one empty bucket and the environment pointing at it."""
    return use_s3(moto, monkeypatch, tmp_path, BUCKET)
