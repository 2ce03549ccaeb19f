"""Worklists of keys: plain lists, CSV, S3 Inventory, and ConfigMap-style YAML.

A manifest replaces (or narrows) the listing: the migration takes exactly the keys it
names. Everything here streams: a manifest of a hundred million keys is read a chunk at a
time and parsed a line at a time, never loaded whole.

Formats:

- `lines`: one key per line, exactly as stored (no trimming beyond the line ending, blank
  lines skipped).
- `csv`: with a header row naming `key` (and optionally `bucket`, `version`/`versionId`),
  or without one in S3 Batch Operations order `bucket,key[,versionId]` (a single column
  is the key). Keys are taken verbatim unless `url_encoded=True` (S3 Batch Operations
  manifests URL-encode them).
- `inventory`: an S3 Inventory `manifest.json`; the gzipped CSV data files it lists are
  fetched from the destination bucket, checked against their MD5, and parsed with the
  manifest's `fileSchema` (keys are URL-encoded there). Delete markers are skipped.
- `configmap`: YAML with `data: {keys: "k1\\nk2"}` (a ConfigMap manifest as `kubectl get -o
  yaml` prints it); values ending in `.csv` are CSV, others plain lists.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

import yaml

from objmig.storage.errors import ManifestError
from objmig.storage.types import STREAM_CHUNK, normalise_etag

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

ManifestFormat = Literal["lines", "csv", "inventory", "configmap"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ManifestEntry:
    """One object named by a manifest. Inventory rows also carry what the listing would."""

    key: str
    version_id: str | None = None
    bucket: str | None = None
    size: int | None = None
    etag: str | None = None
    storage_class: str | None = None


# ---------------------------------------------------------------------------- line input


def parse_lines(lines: Iterable[str]) -> Iterator[ManifestEntry]:
    """A plain list: one key per line."""
    for line in lines:
        key = line.rstrip("\r\n")
        if key:
            yield ManifestEntry(key=key)


class _RecordAssembler:
    """Turns lines (without their endings) into CSV records, across as many calls as needed.

    A record is complete when it holds an even number of double quotes: RFC 4180 escapes
    a quote by doubling it, so only an open quoted field leaves the count odd. Lines of
    an open record are carried over to the next call, so input can arrive in batches.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._quotes = 0

    def feed(self, lines: Iterable[str]) -> Iterator[list[str]]:
        for raw in lines:
            line = raw.rstrip("\r\n")
            self._pending.append(line)
            self._quotes += line.count('"')
            if self._quotes % 2:
                continue
            record = "\n".join(self._pending)
            self._pending, self._quotes = [], 0
            if record.strip():
                yield next(csv.reader([record]))

    def finish(self) -> None:
        if self._pending:
            raise ManifestError("CSV manifest ends inside a quoted field")


def _records(lines: Iterable[str]) -> Iterator[list[str]]:
    """All CSV records of `lines`."""
    assembler = _RecordAssembler()
    yield from assembler.feed(lines)
    assembler.finish()


_KEY_COLUMNS = ("key", "objectkey", "object_key")
_BUCKET_COLUMNS = ("bucket", "bucketname", "bucket_name")
_VERSION_COLUMNS = ("version", "versionid", "version_id")


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower().replace(" ", "") for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


class _CsvRows:
    """Maps CSV records onto entries; decides on the first record whether it is a header."""

    def __init__(self, *, header: bool | None, url_encoded: bool) -> None:
        self._header = header
        self._url_encoded = url_encoded
        self._first = True
        # Headerless default: S3 Batch Operations order bucket,key[,versionId].
        self._key, self._bucket, self._version = 1, 0, 2

    def row(self, row: list[str]) -> ManifestEntry | None:
        if self._first:
            self._first = False
            key_column = _column(row, _KEY_COLUMNS)
            if self._header or (self._header is None and key_column is not None):
                if key_column is None:
                    raise ManifestError(f"CSV manifest header {row!r} has no 'key' column")
                self._key = key_column
                bucket = _column(row, _BUCKET_COLUMNS)
                version = _column(row, _VERSION_COLUMNS)
                self._bucket = -1 if bucket is None else bucket
                self._version = -1 if version is None else version
                return None
            if len(row) == 1:
                self._key, self._bucket, self._version = 0, -1, -1
        if self._key >= len(row):
            raise ManifestError(f"CSV manifest row {row!r} has no key column")
        key = unquote_plus(row[self._key]) if self._url_encoded else row[self._key]
        if not key:
            return None
        return ManifestEntry(
            key=key,
            bucket=_cell(row, self._bucket),
            version_id=_cell(row, self._version),
        )


def _cell(row: list[str], index: int) -> str | None:
    return row[index] or None if 0 <= index < len(row) else None


def parse_csv(
    lines: Iterable[str], *, header: bool | None = None, url_encoded: bool = False
) -> Iterator[ManifestEntry]:
    """A CSV manifest (see the module docstring). `header=None` detects a header row."""
    rows = _CsvRows(header=header, url_encoded=url_encoded)
    for record in _records(lines):
        entry = rows.row(record)
        if entry is not None:
            yield entry


def parse_configmap(
    document: str | Mapping[str, Any], data_key: str | None = None
) -> Iterator[ManifestEntry]:
    """Keys from a ConfigMap-like YAML document (or an already-parsed mapping).

    `data_key` picks one entry of `data`; by default `keys` if present, else every entry in
    name order. Entries named `*.csv` are parsed as CSV, the rest as plain lists.
    """
    loaded = yaml.safe_load(document) if isinstance(document, str) else document
    if not isinstance(loaded, Mapping):
        raise ManifestError("ConfigMap manifest is not a YAML mapping")
    data = loaded.get("data", loaded)
    if not isinstance(data, Mapping):
        raise ManifestError("ConfigMap manifest has no 'data' mapping")
    if data_key is not None:
        if data_key not in data:
            raise ManifestError(f"ConfigMap manifest has no data key {data_key!r}")
        names = [data_key]
    elif "keys" in data:
        names = ["keys"]
    else:
        names = sorted(data)
    for name in names:
        value = data[name]
        if not isinstance(value, str):
            raise ManifestError(f"ConfigMap data {name!r} is not a string")
        lines = value.splitlines()
        if name.endswith(".csv"):
            yield from parse_csv(lines)
        else:
            yield from parse_lines(lines)


def read_manifest_file(
    path: str | Path, fmt: ManifestFormat, *, url_encoded: bool = False
) -> Iterator[ManifestEntry]:
    """Stream a local manifest file (`lines`, `csv` or `configmap`; gzip is detected)."""
    path = Path(path)
    with path.open("rb") as probe:
        gz = probe.read(2) == _GZIP_MAGIC
    if fmt == "configmap":
        # A ConfigMap is at most ~1 MiB (etcd's limit), so loading it whole is fine.
        yield from parse_configmap(path.read_text(encoding="utf-8"))
        return
    if fmt == "inventory":
        raise ManifestError("S3 Inventory manifests are read from their bucket")
    import gzip

    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        if fmt == "lines":
            yield from parse_lines(handle)
        else:
            yield from parse_csv(handle, url_encoded=url_encoded)


# ------------------------------------------------------------------- streaming from S3


async def _object_chunks(
    client: S3Client, bucket: str, key: str, md5: Any | None = None
) -> AsyncIterator[bytes]:
    response = await client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    async with body:
        while True:
            chunk = await body.read(STREAM_CHUNK)
            if not chunk:
                return
            if md5 is not None:
                md5.update(chunk)
            yield chunk


async def _gunzip(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Decompress a gzip stream (several concatenated members allowed) chunk by chunk."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    async for chunk in chunks:
        data = chunk
        while data:
            out = decompressor.decompress(data)
            if out:
                yield out
            if decompressor.eof:
                data = decompressor.unused_data
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                data = b""
    tail = decompressor.flush()
    if tail:
        yield tail


async def _maybe_gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    first = b""
    async for chunk in chunks:
        first = chunk
        break
    if not first:
        return

    async def replay() -> AsyncIterator[bytes]:
        yield first
        async for rest in chunks:
            yield rest

    if first.startswith(_GZIP_MAGIC):
        async for out in _gunzip(replay()):
            yield out
    else:
        async for out in replay():
            yield out


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Split a byte stream into lines (endings removed), decoding UTF-8 incrementally."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.rstrip("\r")


async def _batched(lines: AsyncIterator[str], size: int = 1000) -> AsyncIterator[list[str]]:
    batch: list[str] = []
    async for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def read_manifest_object(
    client: S3Client,
    bucket: str,
    key: str,
    fmt: ManifestFormat,
    *,
    url_encoded: bool = False,
) -> AsyncIterator[ManifestEntry]:
    """Stream a manifest stored as an object (`lines`, `csv`, `configmap` or `inventory`)."""
    if fmt == "inventory":
        async for entry in read_inventory(client, bucket, key):
            yield entry
        return
    text = _lines(_maybe_gunzip(_object_chunks(client, bucket, key)))
    if fmt == "configmap":
        document = "\n".join([line async for line in text])
        for entry in parse_configmap(document):
            yield entry
        return
    # Parse in batches of lines: the parsers are synchronous, and a CSV record may span
    # lines (and so batches), which the record assembler carries over.
    if fmt == "lines":
        async for batch in _batched(text):
            for entry in parse_lines(batch):
                yield entry
        return
    assembler = _RecordAssembler()
    rows = _CsvRows(header=None, url_encoded=url_encoded)
    async for batch in _batched(text):
        for record in assembler.feed(batch):
            row = rows.row(record)
            if row is not None:
                yield row
    assembler.finish()


# ------------------------------------------------------------------------ S3 Inventory


@dataclass(frozen=True)
class InventoryFile:
    """One data file listed by an inventory manifest."""

    key: str
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class InventoryManifest:
    """The parts of an S3 Inventory `manifest.json` that locate and describe its data."""

    source_bucket: str
    destination_bucket: str
    file_format: str
    schema: tuple[str, ...]
    files: tuple[InventoryFile, ...]


def parse_inventory_manifest(document: str | bytes) -> InventoryManifest:
    """Parse an S3 Inventory `manifest.json`."""
    try:
        data = json.loads(document)
    except ValueError as exc:
        raise ManifestError(f"inventory manifest is not JSON: {exc}") from exc
    try:
        destination = str(data["destinationBucket"])
        schema = tuple(s.strip() for s in str(data["fileSchema"]).split(","))
        files = tuple(
            InventoryFile(
                key=str(f["key"]),
                size=int(f["size"]) if "size" in f else None,
                md5=str(f["MD5checksum"]) if "MD5checksum" in f else None,
            )
            for f in data["files"]
        )
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"inventory manifest lacks {exc}") from exc
    return InventoryManifest(
        source_bucket=str(data.get("sourceBucket", "")),
        # "arn:aws:s3:::bucket" -> "bucket"
        destination_bucket=destination.rsplit(":", 1)[-1],
        file_format=str(data.get("fileFormat", "CSV")),
        schema=schema,
        files=files,
    )


def inventory_rows(
    manifest: InventoryManifest,
    lines: Iterable[str],
    *,
    latest_only: bool = True,
    assembler: _RecordAssembler | None = None,
) -> Iterator[ManifestEntry]:
    """Entries from the CSV lines of one inventory data file.

    Inventory CSV has no header; columns follow `fileSchema`, keys are URL-encoded.
    Delete markers are skipped, and with `latest_only` so are non-current versions.
    """
    columns = {name.lower(): index for index, name in enumerate(manifest.schema)}
    if "key" not in columns:
        raise ManifestError(f"inventory fileSchema {manifest.schema!r} has no Key column")

    def cell(row: list[str], name: str) -> str | None:
        index = columns.get(name)
        if index is None or index >= len(row):
            return None
        return row[index] or None

    records = assembler.feed(lines) if assembler is not None else _records(lines)
    for row in records:
        if (cell(row, "isdeletemarker") or "").lower() == "true":
            continue
        if latest_only and (cell(row, "islatest") or "true").lower() != "true":
            continue
        size = cell(row, "size")
        etag = cell(row, "etag")
        yield ManifestEntry(
            key=unquote_plus(cell(row, "key") or ""),
            version_id=cell(row, "versionid"),
            bucket=cell(row, "bucket"),
            size=int(size) if size else None,
            etag=normalise_etag(etag) if etag else None,
            storage_class=cell(row, "storageclass"),
        )


async def read_inventory(
    client: S3Client,
    bucket: str,
    manifest_key: str,
    *,
    data_bucket: str | None = None,
    latest_only: bool = True,
) -> AsyncIterator[ManifestEntry]:
    """Stream the entries of an S3 Inventory report from its `manifest.json`.

    Data files are fetched from the manifest's destination bucket (or `data_bucket`),
    gunzipped and parsed as they arrive; each file's MD5 is checked when it ends, so a
    corrupt file fails the scan (entries already yielded are re-checked by every later
    step anyway).
    """
    response = await client.get_object(Bucket=bucket, Key=manifest_key)
    body = response["Body"]
    async with body:
        manifest = parse_inventory_manifest(await body.read())
    if manifest.file_format.upper() != "CSV":
        raise ManifestError(
            f"inventory format {manifest.file_format} is not supported (use CSV inventories)"
        )
    source = data_bucket or manifest.destination_bucket or bucket
    for data_file in manifest.files:
        md5 = hashlib.md5(usedforsecurity=False)
        chunks = _object_chunks(client, source, data_file.key, md5)
        assembler = _RecordAssembler()
        async for batch in _batched(_lines(_gunzip(chunks))):
            for entry in inventory_rows(
                manifest, batch, latest_only=latest_only, assembler=assembler
            ):
                yield entry
        assembler.finish()
        if data_file.md5 and md5.hexdigest() != data_file.md5.lower():
            raise ManifestError(
                f"inventory data file s3://{source}/{data_file.key} has MD5 "
                f"{md5.hexdigest()}, manifest says {data_file.md5}"
            )
