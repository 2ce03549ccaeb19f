"""Shared fixtures: every service a test needs is started by the suite itself."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.cluster",
    "tests.fixtures.node",
    "tests.fixtures.operator",
]
