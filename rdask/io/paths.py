"""Paths as rdask shows and fingerprints them: without credentials
(:func:`redact`), and with the stamp that changes when a local file does
(:func:`file_stamp`)."""

from __future__ import annotations

import os
import re


def redact(path: str) -> str:
    """``path`` with any credentials or signed query string removed."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in path:
        return path
    vsi = re.match(r"^(/vsi[a-z0-9_]+/)(.*://.*)$", path)
    if vsi:
        return vsi.group(1) + redact(vsi.group(2))
    parts = urlsplit(path)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def file_stamp(path: str) -> tuple[float, int]:
    """``(mtime, size)`` of a local file, or zeros for a URL or VSI path."""
    try:
        st = os.stat(path)
    except OSError:
        return (0.0, 0)
    return (st.st_mtime, st.st_size)
