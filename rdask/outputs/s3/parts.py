"""S3 multipart parts that the compute tasks upload themselves.

What travels in a task is a :class:`~rdask.cloud.multipart.MultipartUpload` (endpoint, bucket, key and
upload id: no credentials, which every process resolves from its own
environment or AWS profile) and a writer: :class:`PartWriter` encodes a
chunk's tiles and uploads them as one part, or, when they are under
5 MiB, as a :class:`Piece`: a temporary object under the output's hidden
prefix. Either result says where the chunk's tiles are inside it, never
the bytes. At commit the client groups the pieces (:func:`plan_parts`) and
an :class:`Assemble` task per part, where the tasks run, concatenates a
group's pieces (after the TIFF header the client built, for part 1) and
uploads them as one part: piece bytes never reach the client.

S3's rules (:mod:`rdask.cloud.multipart`) and the tiles: tiles may be anywhere (the tile index
says where), so a group may hold any chunks: only part 1 is ever padded,
with zero bytes no tile references, when the header and every piece come
to less than 5 MiB and other parts follow (a tiny object).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rdask.cloud.multipart import MIN_PART, MultipartUpload
from rdask.cloud.s3 import delete_objects, get_object, list_objects, put_object, reason
from rdask.errors import OutputError
from rdask.outputs.tiff.coglayout import LEADER, TRAILER, wrap_tile
from rdask.outputs.tiff.tiles import TileEncoder
from rdask.recipe import Region

log = logging.getLogger("rdask")

@dataclass(frozen=True)
class Part:
    """An uploaded part: ``tiles`` is ``[(tile index, offset in part, size), ...]``;
    ``padding`` the zero bytes at its end."""

    number: int
    etag: str
    size: int
    tiles: tuple[tuple[int, int, int], ...] = ()
    padding: int = 0


@dataclass(frozen=True)
class Piece:
    """A chunk's tiles under 5 MiB, stored as the object ``key`` (``size``
    bytes) until a part takes them; ``number`` is the chunk's reserved part
    number, ``tiles`` as :class:`Part`'s (offsets in the piece)."""

    number: int
    key: str
    size: int
    tiles: tuple[tuple[int, int, int], ...] = ()


def piece_key(upload: MultipartUpload, name: str) -> str:
    """Where the piece ``name`` of ``upload`` goes, under the hidden prefix."""
    return f"{piece_prefix(upload)}{name}"


def put_piece(upload: MultipartUpload, key: str, data: bytes) -> None:
    """Store a piece (a plain object: it is deleted after the completion)."""
    try:
        put_object(upload.endpoint, upload.bucket, key, data)
    except Exception as exc:  # noqa: BLE001 - botocore's errors vary; one line
        raise OutputError(f"cannot write a piece of {upload.url}: {reason(exc)}") from None


def get_piece(upload: MultipartUpload, piece: Piece) -> bytes:
    """A piece's bytes, checked against the size its task reported."""
    try:
        data = get_object(upload.endpoint, upload.bucket, piece.key)
    except Exception as exc:  # noqa: BLE001
        raise OutputError(f"cannot read a piece of {upload.url}: {reason(exc)}") from None
    if len(data) != piece.size:
        raise OutputError(f"cannot finish {upload.url}: a piece changed size behind rdask's back "
                          "(rerun without --resume)")
    return data


def pieces_listed(upload: MultipartUpload) -> dict[str, int]:
    """``{key: size}`` of ``upload``'s chunk pieces (one LIST, paginated)."""
    try:
        return list_objects(upload.endpoint, upload.bucket, piece_prefix(upload))
    except Exception as exc:  # noqa: BLE001
        raise OutputError(f"cannot resume {upload.url}: {reason(exc)}") from None


def complete(upload: MultipartUpload, parts: Iterable[Part]) -> None:
    """Complete ``upload`` with ``parts`` (see :meth:`MultipartUpload.complete`)."""
    upload.complete([(p.number, p.etag) for p in parts])


@dataclass(frozen=True)
class PartNumbers:
    """Chunk ``(i, j)`` of a grid is part ``first + i * columns + j``;
    ``last`` is the last part number overall."""

    y_edges: tuple[int, ...]
    x_edges: tuple[int, ...]
    first: int
    last: int

    @classmethod
    def of(cls, chunks: tuple[tuple[int, ...], ...], first: int, last: int | None = None) -> PartNumbers:
        y = tuple(int(v) for v in np.cumsum((0, *chunks[1])))
        x = tuple(int(v) for v in np.cumsum((0, *chunks[2])))
        count = (len(y) - 1) * (len(x) - 1)
        return cls(y, x, first, first + count - 1 if last is None else last)

    def number(self, region: Region) -> int:
        """The part of the chunk at ``region``."""
        return self.at(region[1].start, region[2].start)

    def at(self, y0: int, x0: int) -> int:
        """The part of the chunk starting at row ``y0``, column ``x0`` (ValueError if none does)."""
        return self.first + self.y_edges.index(y0) * (len(self.x_edges) - 1) + self.x_edges.index(x0)


def token(upload_id: str) -> str:
    """A short, key-safe name for one upload's pieces."""
    return hashlib.sha256(upload_id.encode()).hexdigest()[:16]


def prefix_of(key: str) -> str:
    """The hidden prefix of every job's pieces for ``key``."""
    return f"{key}.rdask-partial/"


def delete_pieces(upload: MultipartUpload, *, keep: str | None = None) -> int:
    """Delete the pieces under ``upload``'s key (every job's, but ``keep``'s
    token); return how many. Quiet: a failure only leaves hidden objects,
    which the next job on the key deletes."""
    prefix = prefix_of(upload.key)
    try:
        keys = [k for k in list_objects(upload.endpoint, upload.bucket, prefix)
                if keep is None or not k.startswith(f"{prefix}{keep}/")]
        delete_objects(upload.endpoint, upload.bucket, keys)
    except Exception as exc:  # noqa: BLE001
        log.debug("could not delete the pieces of %s: %s", upload.url, reason(exc))
        return 0
    return len(keys)


def piece_prefix(upload: MultipartUpload) -> str:
    """The hidden prefix of ``upload``'s chunk pieces (the overview pieces
    of :mod:`.levels` are beside it, under the same upload token)."""
    return f"{prefix_of(upload.key)}{token(upload.upload_id)}/small/"


@dataclass(frozen=True)
class PartWriter:
    """Encode a chunk's tiles and upload them as one part, or as a piece
    when they are too few for a part (in the chunk's task).

    ``cog``: every chunk is a piece, each tile wrapped in the size leader
    and repeated trailer of GDAL's COG layout, so that the commit can lay
    the tiles out in COG order (:mod:`.order`); tile offsets point at the
    payload, after the leader.
    """

    encoder: TileEncoder
    upload: MultipartUpload
    numbers: PartNumbers
    cog: bool = False

    def __call__(self, block: np.ndarray, region: Region) -> Part | Piece:
        tiles = self.encoder(block, region)
        number = self.numbers.number(region)
        placed, at, blobs = [], 0, []
        for index, blob in tiles:
            if self.cog:
                blob = wrap_tile(blob)
                placed.append((index, at + LEADER, len(blob) - LEADER - TRAILER))
            else:
                placed.append((index, at, len(blob)))
            blobs.append(blob)
            at += len(blob)
        data = b"".join(blobs)
        # A piece when too few bytes for a part (even the last chunk's: as a
        # piece it can fill part 1, as the last part it could not), and the
        # grid's first chunk whatever its size: part 1 (header first, so
        # < 5 MiB alone) can then take it, and needs no padding unless the
        # whole object is small.
        if self.cog or at < MIN_PART or number == self.numbers.first:
            key = piece_key(self.upload, str(number))
            put_piece(self.upload, key, data)
            log.debug("%s: piece %d stored: %d bytes of tiles", self.upload.url, number, at)
            return Piece(number, key, at, tuple(placed))
        etag = self.upload.put(number, data)
        log.debug("%s: part %d uploaded: %d bytes of tiles + 0 bytes of padding", self.upload.url, number, at)
        return Part(number, etag, at, tuple(placed))


@dataclass(frozen=True)
class Assembly:
    """What one part is made of: ``head`` (part 1's TIFF header), then the
    pieces in order, then ``padding`` zero bytes."""

    number: int
    pieces: tuple[Piece, ...]
    head: bytes = b""
    padding: int = 0


@dataclass(frozen=True)
class Assemble:
    """The commit's tasks: chunk ``j`` of their job uploads ``parts[j]``,
    fetching its pieces where it runs (the client sends only the header)."""

    upload: MultipartUpload
    parts: tuple[Assembly, ...]

    def __call__(self, block: np.ndarray, region: Region) -> Part:
        part = self.parts[region[2].start]
        data = b"".join([part.head, *(get_piece(self.upload, p) for p in part.pieces), bytes(part.padding)])
        etag = self.upload.put(part.number, data)
        kind = "header" if part.number == 1 else "pieces"
        log.debug("%s: part %d uploaded: %d bytes of %s + %d bytes of padding (%d pieces)",
                  self.upload.url, part.number, len(data) - part.padding, kind, part.padding, len(part.pieces))
        return Part(part.number, etag, len(data), padding=part.padding)


@dataclass(frozen=True)
class PartPlan:
    """How the commit makes the object: part 1 (header, then ``first``'s
    pieces, then ``padding``), the ``groups`` of pieces, and the chunks'
    own parts; :meth:`starts` says where each chunk begins in the object."""

    first: tuple[Piece, ...]
    groups: tuple[tuple[Piece, ...], ...]
    parts: tuple[Part, ...]
    head: int
    padding: int

    def starts(self) -> dict[int, int]:
        """``{chunk's part number: where its bytes start in the object}``."""
        at, out = self.head, {}
        for piece in self.first:
            out[piece.number], at = at, at + piece.size
        at += self.padding
        # The other parts in part-number order; a group is numbered after its first piece.
        units: list[tuple[int, tuple[Part | Piece, ...]]] = [(p.number, (p,)) for p in self.parts]
        units += [(g[0].number, g) for g in self.groups]
        for _, members in sorted(units, key=lambda u: u[0]):
            for m in members:
                out[m.number], at = at, at + m.size
        return out

    def assemblies(self, header: bytes) -> tuple[Assembly, ...]:
        """Part 1 (``header``: ``head`` bytes) and one per group."""
        if len(header) != self.head:
            raise AssertionError("rdask bug: the header changed size after the layout")
        return (Assembly(1, self.first, header, self.padding), *(Assembly(g[0].number, g) for g in self.groups))


def plan_parts(head: int, chunks: Iterable[Part | Piece], lead: Sequence[Piece] = ()) -> PartPlan:
    """Group the pieces into parts of at least 5 MiB, in part-number order.

    Part 1 takes the ``head`` bytes of header, the ``lead`` pieces (a COG's
    smallest levels) and the first pieces until it has 5 MiB, then each
    group closes at 5 MiB; what is left is the object's last part when no
    part comes after it, else it joins the last group (or part 1). Part 1
    is padded only when it cannot reach 5 MiB and other parts follow.

    A group is numbered after its first piece, so its later pieces may
    land before a chunk part numbered between them; the pieces themselves
    stay in number order (which keeps a COG's first tiles, all in pieces,
    in level order).
    """
    chunks = sorted(chunks, key=lambda c: c.number)
    parts = tuple(c for c in chunks if isinstance(c, Part))
    first: list[Piece] = list(lead)
    groups: list[list[Piece]] = []
    cur: list[Piece] = []
    size1 = head + sum(p.size for p in lead)
    for piece in (c for c in chunks if isinstance(c, Piece)):
        if not groups and not cur and size1 < MIN_PART:
            first.append(piece)
            size1 += piece.size
            continue
        cur.append(piece)
        if sum(p.size for p in cur) >= MIN_PART:
            groups.append(cur)
            cur = []
    if cur and cur[0].number > max((p.number for p in parts), default=0):
        groups.append(cur)  # the object's last part: it may be small
    else:
        (groups[-1] if groups else first).extend(cur)
    padding = MIN_PART - size1 if size1 < MIN_PART and (groups or parts) else 0
    return PartPlan(tuple(first), tuple(tuple(g) for g in groups), parts, head, padding)
