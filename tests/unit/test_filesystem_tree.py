"""The filesystem store's rules without S3: which keys can be files, where a key may lead,
atomic writes, key order and temporaries (on a real directory, nothing mocked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from objmig.storage.filesystem import FileTree, PathConflictError, UnsafeKeyError, key_segments
from objmig.storage.filesystem.keys import TEMP_PREFIX, is_temporary


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../outside", "'..'"),
        ("a/../../outside", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty path segment"),
        ("dir/", "empty path segment"),
        ("nul\x00byte", "NUL"),
        ("x" * 256, "255-byte names"),
        ("é" * 128, "255-byte names"),  # 256 bytes of UTF-8 in 128 characters
        (".objmig/index.jsonl", "objmig's index"),
        (f"a/{TEMP_PREFIX}x", "temporary"),
        ("/".join(["d" * 200] * 21), "paths stop"),
    ],
)
def test_keys_that_cannot_be_paths_are_refused_with_the_reason(key: str, why: str) -> None:
    with pytest.raises(UnsafeKeyError, match="cannot be a file") as refused:
        key_segments(key)
    assert why in str(refused.value)
    assert refused.value.code == "UnsafeKey"


@pytest.mark.parametrize(
    "key", ["a", "a/b/c.txt", "spaces in name/ü.txt", "x" * 255, ".hidden", "a..b", "...", "a\\b"]
)
def test_awkward_but_safe_keys_are_paths(key: str) -> None:
    assert "/".join(key_segments(key)) == key


def _tree(root: Path, writable: bool = True) -> FileTree:
    tree = FileTree(str(root))
    tree.open(writable=writable)
    return tree


def _write(tree: FileTree, key: str, data: bytes, *, replace: bool = True) -> None:
    pending = tree.begin(key)
    try:
        tree.write_chunk(pending, data)
        tree.finish(pending, mtime_ns=1_600_000_000 * 10**9, replace=replace)
    except BaseException:
        tree.abandon(pending)
        raise


def test_a_symlink_on_the_way_is_refused_and_nothing_is_written_outside_the_root(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    tree = _tree(root)
    (root / "escape").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "target")
    try:
        with pytest.raises(UnsafeKeyError, match="symlink"):
            _write(tree, "escape/stolen", b"x")
        # The final component is never followed either: the link is replaced, not written through.
        _write(tree, "file-link", b"replaced")
        assert tree.stat("escape/stolen") is None
        with pytest.raises(FileNotFoundError):
            tree.open_read("escape/stolen")
    finally:
        tree.close()
    assert list(outside.iterdir()) == []
    assert not (root / "file-link").is_symlink()
    assert (root / "file-link").read_bytes() == b"replaced"


def test_a_key_under_a_file_or_onto_a_directory_is_a_path_conflict(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "root")
    try:
        _write(tree, "a", b"file")
        with pytest.raises(PathConflictError):
            _write(tree, "a/b", b"under a file")
        _write(tree, "d/e", b"deep")
        with pytest.raises(PathConflictError):
            _write(tree, "d", b"onto a directory")
    finally:
        tree.close()
    assert (tmp_path / "root" / "a").read_bytes() == b"file"
    assert not [p for p in (tmp_path / "root").rglob("*") if is_temporary(p.name)]


def test_writes_land_whole_with_the_given_mtime_and_create_only_never_replaces(
    tmp_path: Path,
) -> None:
    tree = _tree(tmp_path / "root")
    try:
        _write(tree, "k", b"first")
        found = tree.stat("k")
        assert found is not None
        assert found.st_mtime_ns == 1_600_000_000 * 10**9
        with pytest.raises(Exception, match="exists"):
            _write(tree, "k", b"second", replace=False)
        _write(tree, "k", b"third", replace=True)
    finally:
        tree.close()
    assert (tmp_path / "root" / "k").read_bytes() == b"third"
    assert [p.name for p in (tmp_path / "root").iterdir()] == [".objmig", "k"]


def test_listing_follows_s3_key_order_with_prefix_and_start_after(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "root")
    keys = ["a.txt", "a/b", "a/c/d", "a0", "b", "z/é", "z/e", "Z", "a/b.c"]
    try:
        for key in keys:
            _write(tree, key, key.encode())
        (tmp_path / "root" / "a" / f"{TEMP_PREFIX}junk").write_bytes(b"half")
        (tmp_path / "root" / "sock-link").symlink_to(tmp_path)
        in_order = sorted(keys, key=lambda k: k.encode())
        assert [k for k, _ in tree.walk()] == in_order
        assert [k for k, _ in tree.walk("a/")] == ["a/b", "a/b.c", "a/c/d"]
        assert [k for k, _ in tree.walk("a")] == ["a.txt", "a/b", "a/b.c", "a/c/d", "a0"]
        for after in in_order:
            expected = [k for k in in_order if k.encode() > after.encode()]
            assert [k for k, _ in tree.walk("", after)] == expected, after
        assert [k for k, _ in tree.walk("", "a/b.b")] == ["a/b.c", "a/c/d", "a0", "b", "z/e", "z/é"]
    finally:
        tree.close()


def test_temporaries_of_a_dead_writer_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = _tree(root)
    # A writer process that dies mid-file (kill -9 leaves exactly this behind).
    script = (
        "import os, sys\n"
        "sys.path[:0] = [" + repr(str(Path(__file__).resolve().parents[2] / "operator")) + "]\n"
        "from objmig.storage.filesystem import FileTree\n"
        f"t = FileTree({str(root)!r}); t.open(writable=True)\n"
        "p = t.begin('dir/object')\n"
        "t.write_chunk(p, b'half of it')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    left = [p for p in (root / "dir").iterdir()]
    assert len(left) == 1
    assert is_temporary(left[0].name)
    assert not (root / "dir" / "object").exists()
    try:
        # A live writer's temporary in the same directory stays.
        mine = tree.begin("dir/other")
        _write(tree, "dir/object", b"whole")
        names = sorted(p.name for p in (root / "dir").iterdir())
        assert names == sorted(["object", mine.temporary])
        tree.abandon(mine)
        assert sorted(os.listdir(root / "dir")) == ["object"]
    finally:
        tree.close()
