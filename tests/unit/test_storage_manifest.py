"""Manifest parsing without a server: plain lists, CSV (with and without header, quoted
multi-line fields, URL-encoded keys), ConfigMap YAML, S3 Inventory manifests and rows."""

from __future__ import annotations

import gzip
import json

import pytest

from objmig.storage.errors import ManifestError
from objmig.storage.manifest import (
    ManifestEntry,
    inventory_rows,
    parse_configmap,
    parse_csv,
    parse_inventory_manifest,
    parse_lines,
    read_manifest_file,
)


def test_plain_list_keeps_keys_verbatim_and_skips_blank_lines() -> None:
    lines = ["a/b\n", "\n", " spaced key \r\n", "last"]

    assert [e.key for e in parse_lines(lines)] == ["a/b", " spaced key ", "last"]


def test_csv_with_header_finds_columns_by_name() -> None:
    lines = ["VersionId,Key,Bucket", "v1,a.txt,b1", ",b.txt,b1"]

    assert list(parse_csv(lines)) == [
        ManifestEntry(key="a.txt", version_id="v1", bucket="b1"),
        ManifestEntry(key="b.txt", version_id=None, bucket="b1"),
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["only-key"], [ManifestEntry("only-key")]),
        (
            ["bkt,k1", "bkt,k2"],
            [ManifestEntry("k1", bucket="bkt"), ManifestEntry("k2", bucket="bkt")],
        ),
        (["bkt,k1,v9"], [ManifestEntry("k1", version_id="v9", bucket="bkt")]),
    ],
)
def test_headerless_csv_follows_batch_operations_order(lines, expected) -> None:
    assert list(parse_csv(lines)) == expected


def test_csv_quoted_fields_may_hold_commas_quotes_and_newlines() -> None:
    lines = ['bkt,"a,b ""c""",v1', 'bkt,"multi', 'line key",v2', "bkt,plain,"]

    assert [(e.key, e.version_id) for e in parse_csv(lines)] == [
        ('a,b "c"', "v1"),
        ("multi\nline key", "v2"),
        ("plain", None),
    ]


def test_csv_ending_inside_a_quoted_field_is_an_error() -> None:
    with pytest.raises(ManifestError, match="quoted"):
        list(parse_csv(['bkt,"never closed']))


def test_url_encoded_csv_keys_are_decoded() -> None:
    entries = parse_csv(["bkt,dir%2Fa+b%2Bc.txt"], url_encoded=True)

    assert [e.key for e in entries] == ["dir/a b+c.txt"]


def test_header_without_key_column_is_an_error() -> None:
    with pytest.raises(ManifestError, match="key"):
        list(parse_csv(["bucket,version", "b,v"], header=True))


def test_configmap_keys_entry() -> None:
    document = """
apiVersion: v1
kind: ConfigMap
metadata: {name: worklist}
data:
  keys: |
    a/1
    a/2
  other: ignored
"""
    assert [e.key for e in parse_configmap(document)] == ["a/1", "a/2"]


def test_configmap_without_keys_entry_reads_every_entry_in_name_order() -> None:
    data = {"data": {"b.txt": "k3\n", "a.csv": "bucket,key\nbkt,k1\nbkt,k2\n"}}

    assert [e.key for e in parse_configmap(data)] == ["k1", "k2", "k3"]


def test_configmap_named_entry_must_exist() -> None:
    with pytest.raises(ManifestError, match="missing"):
        list(parse_configmap({"data": {"keys": "a"}}, data_key="missing"))


def test_local_manifest_files_stream_plain_and_gzipped(tmp_path) -> None:
    plain = tmp_path / "keys.txt"
    plain.write_text("\ufeffk1\nk2\n", encoding="utf-8")
    zipped = tmp_path / "keys.csv.gz"
    with gzip.open(zipped, "wt", encoding="utf-8") as handle:
        handle.write("key,version\nk3,v3\n")

    assert [e.key for e in read_manifest_file(plain, "lines")] == ["k1", "k2"]
    assert list(read_manifest_file(zipped, "csv")) == [ManifestEntry("k3", version_id="v3")]


INVENTORY_MANIFEST = {
    "sourceBucket": "src",
    "destinationBucket": "arn:aws:s3:::inventory-dest",
    "version": "2016-11-30",
    "creationTimestamp": "1514944800000",
    "fileFormat": "CSV",
    "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, ETag, StorageClass",
    "files": [
        {
            "key": "inv/data/1.csv.gz",
            "size": 2147,
            "MD5checksum": "f11166069f1990abeb9c97ace9cdfabc",
        }
    ],
}


def test_inventory_manifest_is_parsed() -> None:
    manifest = parse_inventory_manifest(json.dumps(INVENTORY_MANIFEST))

    assert manifest.destination_bucket == "inventory-dest"
    assert manifest.schema[:3] == ("Bucket", "Key", "VersionId")
    assert manifest.files[0].key == "inv/data/1.csv.gz"
    assert manifest.files[0].md5 == "f11166069f1990abeb9c97ace9cdfabc"


def test_inventory_manifest_without_schema_is_an_error() -> None:
    broken = {k: v for k, v in INVENTORY_MANIFEST.items() if k != "fileSchema"}
    with pytest.raises(ManifestError, match="fileSchema"):
        parse_inventory_manifest(json.dumps(broken))


def test_inventory_rows_decode_keys_and_skip_delete_markers_and_old_versions() -> None:
    manifest = parse_inventory_manifest(json.dumps(INVENTORY_MANIFEST))
    lines = [
        '"src","dir%2Fa+b.txt","v2","true","false","10","""abc""","STANDARD"',
        '"src","dir%2Fa+b.txt","v1","false","false","9","def","STANDARD"',
        '"src","gone","v3","true","true","","",""',
        '"src","cold","v4","true","false","5","0123","GLACIER"',
    ]

    latest = list(inventory_rows(manifest, lines))
    every = list(inventory_rows(manifest, lines, latest_only=False))

    assert latest == [
        ManifestEntry("dir/a b.txt", "v2", "src", 10, "abc", "STANDARD"),
        ManifestEntry("cold", "v4", "src", 5, "0123", "GLACIER"),
    ]
    assert [e.version_id for e in every] == ["v2", "v1", "v4"]
