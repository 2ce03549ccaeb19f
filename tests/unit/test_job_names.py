"""Job names: every resource name the CRD accepts gets valid, distinct, stable Job names."""

from __future__ import annotations

import re

import pytest

from objmig.api.migration import MAX_PARALLELISM
from objmig.controller.jobs import cleanup_run, job_name, stage_run

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _hostname(job: str) -> str:
    # An Indexed Job's pod hostname: the Job name and the largest index.
    return f"{job}-{MAX_PARALLELISM - 1}"


@pytest.mark.parametrize("length", [1, 40, 51, 52, 53, 54, 58, 59, 60, 63])
def test_every_run_of_a_resource_gets_a_distinct_valid_job_name(length: int) -> None:
    resource = ("a" * (length - 1) + "z")[:length]
    runs = [cleanup_run(p) for p in range(12)] + [
        stage_run(stage, r, w) for stage in ("scan", "copy") for r in range(12) for w in range(3)
    ]

    names = [job_name(resource, run) for run in runs]

    assert len(set(names)) == len(names)
    for name in names:
        assert DNS_LABEL.match(_hostname(name)), name
        assert len(_hostname(name)) <= 63, name


def test_names_that_fit_are_kept_readable_as_before() -> None:
    assert job_name("photos", stage_run("scan", 0)) == "photos-scan-r0"
    assert job_name("photos", stage_run("copy", 2, 1)) == "photos-copy-r2-w1"
    assert job_name("photos", cleanup_run(0)) == "photos-cleanup"
    assert job_name("photos", cleanup_run(3)) == "photos-cleanup-p3"


def test_two_long_names_sharing_a_prefix_get_different_job_names() -> None:
    first, second = "x" * 62 + "a", "x" * 62 + "b"

    assert job_name(first, cleanup_run(1)) != job_name(second, cleanup_run(1))
    assert job_name(first, cleanup_run(1)) == job_name(first, cleanup_run(1))
