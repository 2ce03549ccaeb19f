"""How many Events and log lines the operator leaves behind in a while (issue 24.6).

Starts a control plane (tests/support/cluster.py), moto, a PostgreSQL server and one
``objmig operator`` for one namespace, applies what a cluster user's namespace typically
holds after a while, and counts after ``--minutes``:

- a migration of ``--objects`` small objects, which cuts over and then rests;
- an ObjectMigration the models refuse (an unknown keyTemplate placeholder: InvalidSpec);
- a MigrationCleanup of a migration that does not exist (MigrationNotFound).

It prints the Events about them (the sum of their counts) and the bytes and lines the
operator wrote. ``--objmig`` runs another build's operator (e.g. a worktree of an older
commit) against the same setup, for a before-and-after::

    .venv/bin/python benchmarks/operator_noise.py --minutes 30
    .venv/bin/python benchmarks/operator_noise.py --minutes 30 --objmig ../other/.venv/bin/objmig
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.cluster import (  # noqa: E402
    Component,
    ControlPlane,
    find_bin_dir,
    free_port,
    wait_until,
)

from objmig.local.postgres import EmbeddedPostgres  # noqa: E402
from objmig.local.s3server import LocalS3Server  # noqa: E402

NAMESPACE = "noise"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument(
        "--objmig", default=str(Path(sys.executable).parent / "objmig"), help="objmig to run"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="objmig-noise-") as scratch:
        work = Path(scratch)
        cluster = ControlPlane(bin_dir=find_bin_dir(), state_dir=work / "k8s")
        cluster.start()
        try:
            with (
                LocalS3Server() as s3,
                EmbeddedPostgres(work / "pg", fast=True) as ledger,
            ):
                run(cluster, s3, ledger.dsn, args, work)
        finally:
            cluster.stop()


def run(
    cluster: ControlPlane, s3: LocalS3Server, dsn: str, args: argparse.Namespace, work: Path
) -> None:
    crds = sorted((ROOT / "crds").glob("*.yaml"))
    for path in crds:
        cluster.apply_yaml(path.read_text())
    for path in crds:
        name = f"crd/{path.name.removesuffix('.yaml')}"
        wait_until(
            lambda name=name: cluster.kubectl(
                "wait", "--for=condition=Established", name, "--timeout=10s", check=False,
                timeout=20,
            ).returncode == 0,
            timeout=120,
            what=f"{name} Established",
        )  # fmt: skip
    cluster.kubectl("create", "namespace", NAMESPACE)
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.credentials.access_key_id,
        aws_secret_access_key=s3.credentials.secret_access_key,
        region_name="us-east-1",
    )
    for bucket in ("noise-src", "noise-dst"):
        client.create_bucket(Bucket=bucket)
    for i in range(args.objects):
        client.put_object(Bucket="noise-src", Key=f"k/{i:05d}", Body=b"x" * 256)

    log_path = work / "operator.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OBJMIG_")},
        **cluster.env(),
        "OBJMIG_DATABASE_URL": dsn,
        "OBJMIG_WORKER_IMAGE": "objmig:bench",
    }
    argv = [
        args.objmig, "operator", "--namespace", NAMESPACE, "--metrics-port", str(free_port()),
        "--health-port", str(free_port()), "--log-format", "json",
    ]  # fmt: skip
    operator = Component("operator", argv, log_path, env)
    operator.start()
    try:
        side = {
            "endpoint": s3.endpoint_url,
            "addressingStyle": "path",
            "credentialsSecretRef": {"name": "s3"},
        }
        cluster.apply_yaml(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "s3"},
                    "stringData": {
                        "accessKeyId": s3.credentials.access_key_id,
                        "secretAccessKey": s3.credentials.secret_access_key,
                    },
                },
                _migration(
                    "photos", {**side, "bucket": "noise-src"}, {**side, "bucket": "noise-dst"}
                ),
                _migration(
                    "invalid",
                    {**side, "bucket": "noise-src"},
                    {**side, "bucket": "noise-dst", "keyTemplate": "{nope}/{key}"},
                ),
                {
                    "apiVersion": "objmig.dev/v1alpha1",
                    "kind": "MigrationCleanup",
                    "metadata": {"name": "orphan"},
                    "spec": {"migrationRef": {"name": "never-was"}},
                },
            ],
            namespace=NAMESPACE,
        )
        started = time.monotonic()
        cluster.kubectl(
            "wait", "--for=condition=CutOver", "objectmigrations.objmig.dev/photos",
            "-n", NAMESPACE, "--timeout=600s", timeout=620,
        )  # fmt: skip
        cut_over = time.monotonic() - started
        remaining = args.minutes * 60 - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)  # the span being measured, not a synchronisation
        elapsed = time.monotonic() - started
        events = cluster.kubectl_json("get", "events", "-n", NAMESPACE)["items"]
    finally:
        operator.stop(timeout=15)

    about: dict[str, int] = {}
    for event in events:
        involved = event["involvedObject"]
        if involved.get("kind") in ("ObjectMigration", "MigrationCleanup"):
            key = f"{involved['name']} {event['type']} {event['reason']}"
            about[key] = about.get(key, 0) + int(event.get("count") or 1)
    text = log_path.read_bytes()
    print(f"objmig: {args.objmig}")
    print(f"span: {elapsed / 60:.1f} min ({args.objects} objects cut over after {cut_over:.0f} s)")
    print(f"events about the resources: {sum(about.values())}")
    for key, count in sorted(about.items()):
        print(f"  {count:6d}  {key}")
    lines = text.count(b"\n")
    print(f"operator log: {len(text)} bytes, {lines} lines")


def _migration(
    name: str, source: dict[str, object], target: dict[str, object]
) -> dict[str, object]:
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": name},
        "spec": {"source": source, "target": target},
    }


if __name__ == "__main__":
    main()
