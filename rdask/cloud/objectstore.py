"""Zarr stores on S3, through zarr's own ``ObjectStore`` over ``obstore``.

Every process (the client, each worker) builds its own connection from the
store's URL and the :class:`~rdask.cloud.s3.S3Endpoint` (plain data that
travels with tasks); credentials are read there from that process's
environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) by obstore itself, so they are never pickled, logged
or put in a key. obstore is a standalone wheel (no botocore pin), installed
with ``rdask[s3]``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rdask.cloud.s3 import RetryPolicy, S3Endpoint, split_s3
from rdask.errors import RdaskError

#: The extra that installs what this module needs.
EXTRA = "rdask[s3]"

T = TypeVar("T")


class MissingExtraError(RdaskError, ImportError):
    """obstore is not installed."""


def _obstore() -> Any:
    try:
        import obstore
        import obstore.store  # noqa: F401 - the S3Store class
    except ImportError:
        raise MissingExtraError(f"Zarr stores on S3 need obstore: pip install '{EXTRA}'") from None
    return obstore


def split_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/out.zarr/`` -> ``("bucket", "a/out.zarr")``."""
    return split_s3(url.rstrip("/"))


def object_store(url: str, endpoint: S3Endpoint) -> Any:
    """An obstore ``S3Store`` rooted at the store's prefix (one per process),
    retrying as :class:`~rdask.cloud.s3.RetryPolicy` says."""
    return _object_store(os.getpid(), url.rstrip("/"), endpoint)


@functools.lru_cache(maxsize=32)
def _object_store(pid: int, url: str, endpoint: S3Endpoint) -> Any:
    # ``pid`` in the key: a connection pool is not carried across a fork.
    obstore = _obstore()
    bucket, prefix = split_store_url(url)
    config: dict[str, Any] = {"region": endpoint.region or "us-east-1"}
    client: dict[str, Any] = {}
    if endpoint.endpoint:
        scheme = "https" if endpoint.https else "http"
        host = f"{bucket}.{endpoint.endpoint}" if endpoint.virtual_hosting else endpoint.endpoint
        config["endpoint"] = f"{scheme}://{host}"
        config["virtual_hosted_style_request"] = endpoint.virtual_hosting
        client["allow_http"] = not endpoint.https
    return obstore.store.S3Store(bucket, prefix=prefix, config=config, client_options=client or None,
                                 retry_config=RetryPolicy.from_environment().obstore())


def zarr_store(url: str, endpoint: S3Endpoint, *, read_only: bool = True) -> Any:
    """zarr's ``ObjectStore`` over :func:`object_store`, its requests tried
    again where obstore leaves them (:func:`again`)."""
    from zarr.storage import ObjectStore

    return _retrying()(ObjectStore(object_store(url, endpoint), read_only=read_only))


@functools.cache
def _retrying() -> type:
    """A zarr ``WrapperStore`` whose requests fail only when :func:`again`
    would give up: obstore does not repeat a GET whose error answer (a
    404 for a chunk or shard not written yet) broke off mid-body."""
    from zarr.storage import WrapperStore

    class Retrying(WrapperStore):
        async def get(self, key, prototype, byte_range=None):  # noqa: ANN001, ANN202 - zarr's signature
            return await again_async(lambda: self._store.get(key, prototype, byte_range))

        async def get_partial_values(self, prototype, key_ranges):  # noqa: ANN001, ANN202
            key_ranges = list(key_ranges)
            return await again_async(lambda: self._store.get_partial_values(prototype, key_ranges))

        async def exists(self, key):  # noqa: ANN001, ANN202
            return await again_async(lambda: self._store.exists(key))

        async def set(self, key, value):  # noqa: ANN001, ANN202
            return await again_async(lambda: self._store.set(key, value))

        async def delete(self, key):  # noqa: ANN001, ANN202
            return await again_async(lambda: self._store.delete(key))

    return Retrying


def zarr_array(url: str, endpoint: S3Endpoint, array: str, metadata: str, *, read_only: bool) -> Any:
    """The array ``array`` of the store at ``url`` described by ``metadata``
    (its ``zarr.json`` text), without reading the metadata from the store:
    chunks are written (and overview levels read) before any metadata is
    there. Cached per process and thread-safe (zarr's calls run on its loop)."""
    return _zarr_array(os.getpid(), url.rstrip("/"), endpoint, array, metadata, read_only)


@functools.lru_cache(maxsize=64)
def _zarr_array(pid: int, url: str, endpoint: S3Endpoint, array: str, metadata: str, read_only: bool) -> Any:
    import zarr
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    path = StorePath(zarr_store(url, endpoint, read_only=read_only), array)
    # write_empty_chunks: every chunk key is written, so an overwrite leaves no old chunk behind.
    return zarr.Array(AsyncArray(json.loads(metadata), path, config={"write_empty_chunks": True}))


def chunk_metadata(path: str) -> str:
    """A local array's ``zarr.json`` without its attributes: what writing
    and reading chunks needs, small enough to travel with every task."""
    with open(os.path.join(path, "zarr.json")) as fh:
        meta = json.load(fh)
    meta["attributes"] = {}
    return json.dumps(meta, sort_keys=True)


def list_keys(url: str, endpoint: S3Endpoint) -> dict[str, int]:
    """Every key under the store's prefix (relative to it) and its size."""
    obstore = _obstore()

    def listing() -> dict[str, int]:
        out: dict[str, int] = {}
        for batch in obstore.list(object_store(url, endpoint), chunk_size=1000):
            for obj in batch:
                out[obj["path"]] = int(obj["size"])
        return out

    return again(listing)


def delete_keys(url: str, endpoint: S3Endpoint, keys: list[str]) -> None:
    """Delete ``keys`` (relative to the store's prefix), in that order, a
    thousand per request (S3's DeleteObjects limit)."""
    obstore = _obstore()
    store = object_store(url, endpoint)
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        again(lambda batch=batch: obstore.delete(store, batch))


def again(call: Callable[[], T]) -> T:
    """``call()``, tried again as :class:`~rdask.cloud.s3.RetryPolicy` says
    when it fails in transport: obstore retries what is safe for any HTTP
    request, never a POST that failed in transport (DeleteObjects, which
    is safe to repeat: a key deleted twice is gone), nor a listing whose
    body, or a GET whose error answer, broke off after the headers (reads).
    A failure with an HTTP status obstore has already retried, or refused
    to (a 4xx), is final.
    """
    policy = RetryPolicy.from_environment()
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == policy.attempts or not in_transport(exc):
                raise
            time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


async def again_async(call: Callable[[], Awaitable[T]]) -> T:
    """:func:`again` for a coroutine."""
    policy = RetryPolicy.from_environment()
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == policy.attempts or not in_transport(exc):
                raise
            await asyncio.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


def in_transport(exc: BaseException) -> bool:
    """Whether an obstore error is a connection's, not an HTTP answer's."""
    text = str(exc)
    return "HTTP error" in text and not re.search(r"status(?: code)?:? \(?\d{3}", text)


def put_file(url: str, endpoint: S3Endpoint, key: str, local: str) -> None:
    """Upload the local file ``local`` to ``key`` (relative to the store's prefix)."""
    obstore = _obstore()
    with open(local, "rb") as fh:
        obstore.put(object_store(url, endpoint), key, fh.read())
