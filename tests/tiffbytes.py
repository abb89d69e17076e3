"""A TIFF's tiles as stored: the bytes a codec wrote, read with tifffile alone."""

from __future__ import annotations

import tifffile


def stored_tiles(path, page: int = 0) -> tuple[tifffile.TiffPage, list[bytes]]:
    """IFD ``page`` of ``path`` and its tiles' (or strips') stored bytes, in index order."""
    with tifffile.TiffFile(path) as tf:
        p = tf.pages[page]
        fh = tf.filehandle
        tiles = []
        for offset, count in zip(p.dataoffsets, p.databytecounts, strict=True):
            fh.seek(offset)
            tiles.append(fh.read(count))
        return p, tiles
