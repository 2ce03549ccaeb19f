"""Selection: globs on keys relative to the prefix, date/size/class bounds, metadata rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from objmig.storage.selection import (
    GlobError,
    MetadataRule,
    Selection,
    compile_earlier_glob,
    glob_match,
    metadata_matches,
    rule_matches,
)


@dataclass(frozen=True)
class Obj:
    key: str
    size: int = 100
    last_modified: datetime = datetime(2024, 6, 1, tzinfo=UTC)
    storage_class: str = "STANDARD"


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        # rclone's rules: without a leading `/`, a pattern matches at any depth, from a `/`.
        ("*.csv", "a.csv", True),
        ("*.csv", "dir/a.csv", True),
        ("*.tmp", "logs/x.tmp", True),
        ("file.jpg", "file.jpg", True),
        ("file.jpg", "directory/file.jpg", True),
        ("file.jpg", "afile.jpg", False),  # only whole path elements
        ("file.jpg", "directory/afile.jpg", False),
        # A leading `/` anchors at the prefix.
        ("/file.jpg", "file.jpg", True),
        ("/file.jpg", "directory/file.jpg", False),
        ("/*.csv", "dir/a.csv", False),  # `*` stays within one segment
        ("/logs/**", "logs/2024/01/a.gz", True),
        ("/logs/**", "logs", False),
        ("/logs/**", "logsx/a", False),
        ("/a/**/b", "a/x/y/b", True),
        ("/a/**/b", "a/b", False),  # `**` is any run with its slashes, as in rclone
        ("/a**", "a/b/c", True),
        ("logs/*.gz", "x/logs/a.gz", True),
        ("logs/*.gz", "xlogs/a.gz", False),
        # A pattern ending in `/` is a directory: everything under it, at any depth.
        ("cache/", "cache/a", True),
        ("cache/", "x/cache/b/c", True),
        ("cache/", "cachex/a", False),
        ("/cache/", "x/cache/b", False),
        ("?.txt", "a.txt", True),
        ("?.txt", "d/a.txt", True),
        ("/?.txt", "/.txt", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("/[!ab]x", "/x", False),  # a negated class does not match the separator
        ("img.{jpg,png}", "img.png", True),
        ("img.{jpg,png}", "img.gif", False),
        ("img.{jpg,{png,gif}}", "d/img.gif", True),  # alternatives nest
        (r"literal\*.txt", "literal*.txt", True),
        (r"literal\*.txt", "literalx.txt", False),
        ("a+b (1).txt", "a+b (1).txt", True),  # regex metacharacters are literal
        ("*", "", True),
        ("*", "a/b", True),  # the last segment is a run of non-separators
        ("data/*", "data/a\nb", True),  # keys may contain newlines
    ],
)
def test_glob_semantics_follow_rclone(pattern: str, key: str, expected: bool) -> None:
    assert glob_match(pattern, key) is expected


@pytest.mark.parametrize(
    ("pattern", "key", "before", "now"),
    [
        ("*.tmp", "logs/x.tmp", False, True),  # the example
        ("*.tmp", "x.tmp", True, True),
        ("/*.tmp", "logs/x.tmp", False, False),  # anchored: the old meaning, kept
        ("a/**/b", "a/b", True, False),  # `**/` matched zero directories before
        ("logs/**", "x/logs/a", False, True),
    ],
)
def test_what_the_globs_meant_before_is_kept_to_compare(
    pattern: str, key: str, before: bool, now: bool
) -> None:
    assert (compile_earlier_glob(pattern).match(key) is not None) is before
    assert glob_match(pattern, key) is now


def test_a_selection_says_which_keys_it_selects_otherwise_than_before() -> None:
    selection = Selection(prefix="p/", exclude=("*.tmp",))
    assert selection.changed(Obj("p/logs/x.tmp"))  # excluded now, selected before
    assert not selection.changed(Obj("p/x.tmp"))
    assert not selection.changed(Obj("p/logs/x.csv"))
    assert not Selection().changed(Obj("anything"))


@pytest.mark.parametrize("pattern", ["[abc", "{a,b", "x\\", "a***", "{{re}}"])
def test_bad_globs_fail_when_the_selection_is_built(pattern: str) -> None:
    with pytest.raises(GlobError):
        Selection(include=(pattern,))


def test_globs_apply_to_the_key_relative_to_the_prefix() -> None:
    selection = Selection(prefix="data/", include=("/*.csv",))

    assert selection.matches(Obj("data/a.csv"))
    assert not selection.matches(Obj("data/sub/a.csv"))
    assert not selection.matches(Obj("other/a.csv"))
    assert selection.explain(Obj("other/a.csv")) == "outside prefix 'data/'"


def test_empty_include_selects_everything_and_exclude_wins() -> None:
    selection = Selection(include=("**",), exclude=("*.tmp", "/cache/**"))
    everything = Selection()

    assert everything.matches(Obj("any/key"))
    assert selection.matches(Obj("a/b.txt"))
    assert not selection.matches(Obj("a/b.tmp"))
    assert selection.explain(Obj("cache/x")) == "excluded by '/cache/**'"


def test_modified_bounds_are_exclusive() -> None:
    edge = datetime(2024, 6, 1, tzinfo=UTC)
    after = Selection(modified_after=edge)
    before = Selection(modified_before=edge)

    assert not after.matches(Obj("k", last_modified=edge))
    assert after.matches(Obj("k", last_modified=datetime(2024, 6, 2, tzinfo=UTC)))
    assert not before.matches(Obj("k", last_modified=edge))
    assert before.matches(Obj("k", last_modified=datetime(2024, 5, 31, tzinfo=UTC)))


def test_naive_dates_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Selection(modified_after=datetime(2024, 1, 1))


def test_size_bounds_are_inclusive() -> None:
    selection = Selection(min_size=10, max_size=20)

    assert [selection.matches(Obj("k", size=s)) for s in (9, 10, 20, 21)] == [
        False,
        True,
        True,
        False,
    ]
    assert selection.explain(Obj("k", size=9)) == "smaller than 10 bytes"


def test_storage_class_filter() -> None:
    selection = Selection(storage_classes=("GLACIER", "DEEP_ARCHIVE"))

    assert selection.matches(Obj("k", storage_class="GLACIER"))
    assert not selection.matches(Obj("k", storage_class="STANDARD"))


@pytest.mark.parametrize(
    ("rule", "metadata", "expected"),
    [
        (MetadataRule("storage-version", "Lt", ("3",)), {"storage-version": "2"}, True),
        (MetadataRule("storage-version", "Lt", ("3",)), {"storage-version": "10"}, False),
        (MetadataRule("storage-version", "Lt", ("3",)), {}, False),  # missing: no match
        (MetadataRule("Storage-Version", "Le", ("3",)), {"storage-version": "3"}, True),
        (MetadataRule("v", "Gt", ("9",)), {"v": "10"}, True),  # numeric, not "10" < "9"
        (MetadataRule("v", "Ge", ("1.5",)), {"v": "1.50"}, True),
        (MetadataRule("v", "Gt", ("b",)), {"v": "c"}, True),  # strings compare as strings
        (MetadataRule("v", "Eq", ("1",)), {"v": "1.0"}, True),
        (MetadataRule("v", "Eq", ("abc",)), {"V": "abc"}, True),  # keys case-insensitive
        (MetadataRule("v", "NotEq", ("a",)), {}, True),
        (MetadataRule("v", "In", ("a", "b")), {"v": "b"}, True),
        (MetadataRule("v", "In", ("a", "b")), {"v": "c"}, False),
        (MetadataRule("v", "NotIn", ("a", "b")), {"v": "c"}, True),
        (MetadataRule("v", "NotIn", ("a", "b")), {}, True),
        (MetadataRule("v", "Exists"), {"v": ""}, True),
        (MetadataRule("v", "Exists"), {}, False),
        (MetadataRule("v", "DoesNotExist"), {}, True),
        (MetadataRule("v", "Lt", ("NaN",)), {"v": "1"}, True),  # NaN is not a number here
        # A default is what a missing key counts as (objects older than the key), nothing more.
        (MetadataRule("storage-version", "Lt", ("3",), "0"), {}, True),
        (MetadataRule("storage-version", "Lt", ("3",), "0"), {"storage-version": "3"}, False),
        (MetadataRule("storage-version", "Lt", ("3",), "0"), {"Storage-Version": "2"}, True),
        (MetadataRule("storage-version", "Lt", ("3",), "5"), {}, False),
        (MetadataRule("v", "In", ("a",), "a"), {}, True),
        (MetadataRule("v", "NotIn", ("a",), "a"), {}, False),
    ],
)
def test_metadata_rules(rule: MetadataRule, metadata: dict[str, str], expected: bool) -> None:
    assert rule_matches(metadata, rule) is expected


def test_metadata_rules_are_all_required() -> None:
    rules = [MetadataRule("a", "Exists"), MetadataRule("b", "Eq", ("1",))]

    assert metadata_matches({"a": "x", "b": "1"}, rules)
    assert not metadata_matches({"a": "x", "b": "2"}, rules)
    assert metadata_matches({}, [])


def test_rule_parsing_accepts_aliases_and_checks_arity() -> None:
    assert MetadataRule.parse("k", "lte", value="3") == MetadataRule("k", "Le", ("3",))
    assert MetadataRule.parse("k", "NotExists").operator == "DoesNotExist"
    assert MetadataRule.parse("k", "in", values=["a", "b"]).values == ("a", "b")
    with pytest.raises(ValueError, match="unknown"):
        MetadataRule.parse("k", "Like", value="x")
    with pytest.raises(ValueError, match="needs a value"):
        MetadataRule("k", "Lt")
    with pytest.raises(ValueError, match="exactly one"):
        MetadataRule("k", "Eq", ("a", "b"))
    assert MetadataRule.parse("k", "lt", value="3", default="0").default == "0"
    with pytest.raises(ValueError, match="takes no default"):
        MetadataRule("k", "Exists", default="0")


@given(st.text(alphabet=st.characters(blacklist_characters="*?[]{}\\,"), max_size=40))
def test_an_anchored_pattern_without_wildcards_matches_exactly_itself(key: str) -> None:
    pattern = "/" + key
    if key.endswith("/"):
        return  # a directory pattern: see test_glob_semantics_follow_rclone
    assert glob_match(pattern, key)
    assert not glob_match(pattern, key + "x")
    assert not glob_match(pattern, "d/" + key)


@given(st.text(max_size=40))
def test_double_star_matches_any_key(key: str) -> None:
    assert glob_match("**", key)
