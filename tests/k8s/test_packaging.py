"""The chart and the manifests on the real control plane.

``helm install`` puts the operator Deployment in the cluster; the pod runner runs it as a local
process. To make RBAC real, the operator authenticates as the chart's ServiceAccount: a token
from TokenRequest (``kubectl create token``) in a kubeconfig that ``operator.extraEnv`` points
KUBECONFIG at (pods share the host filesystem; a real cluster would mount it from a Secret with
``operator.extraVolumes``). The kubeconfig's server is a recording reverse proxy in front of the
API server, so the test sees every request the operator makes - that record is how the RBAC
rules were derived, and it proves them: every request allowed, every granted rule used or
explained in ``UNEXERCISED``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from types_aiobotocore_s3 import S3Client

from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalS3Server
from objmig.storage.types import normalise_etag
from tests.fixtures.s3 import S3Seeder
from tests.support.catalog import catalog_database, catalog_rows
from tests.support.cluster import ControlPlane, free_port, wait_until
from tests.unit.test_packaging_static import CHART, MANIFESTS, ROOT, helm_binary, rule_set

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

Rule = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# Granted but not necessarily requested in this test's run, and why each is still needed.
UNEXERCISED: dict[Rule, str] = {
    ("objmig.dev", "migrationcleanups", "list"): "the MigrationCleanup controller",
    ("objmig.dev", "migrationcleanups", "watch"): "the MigrationCleanup controller",
    ("objmig.dev", "migrationcleanups", "patch"): "the MigrationCleanup controller",
    ("objmig.dev", "migrationcleanups/status", "patch"): "the MigrationCleanup controller",
    ("objmig.dev", "objectmigrations/finalizers", "update"): (
        "blockOwnerDeletion on worker Jobs under OwnerReferencesPermissionEnforcement, an "
        "admission plugin the test API server does not enable"
    ),
    ("batch", "jobs", "patch"): "resizing or suspending a Job (spec.workers / spec.suspend)",
    ("batch", "jobs", "delete"): (
        "deleting the Jobs of a namespace being deleted (tests/k8s/test_operator_faults.py)"
    ),
}


# -- a recording reverse proxy in front of the API server ------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


class RecordingProxy:
    """TLS on 127.0.0.1 -> TLS to the API server; records (method, path, status).

    It serves with the API server's own certificate (same CA, SAN 127.0.0.1), so a client
    verifies it exactly as it would verify the API server - Go clients such as kubectl do not
    send bearer tokens over plain HTTP. The client's Authorization header is passed through
    unchanged, so the API server authenticates and authorizes the client itself. Responses
    (watches included) are streamed.
    """

    def __init__(self, server_url: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        parts = urlsplit(server_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 443)
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.records: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPSConnection] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forward(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        serving.load_cert_chain(str(cert_file), str(key_file))
        # The handshake happens in the handler's thread, not in the accept loop.
        self.httpd.socket = serving.wrap_socket(
            self.httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            open_conns = list(self._open)
        for conn in open_conns:
            # shutdown(), not close(): close() would wait for the buffered reader's lock, held by
            # a thread blocked reading a watch; shutdown() makes that read return at once.
            with contextlib.suppress(Exception):
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def forward(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = http.client.HTTPSConnection(*self.upstream, context=self.context, timeout=600)
        with self._lock:
            self._open.add(conn)
        try:
            conn.request(request.command, request.path, body=body, headers=headers)
            response = conn.getresponse()
            with self._lock:
                self.records.append((request.command, request.path, response.status))
            request.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    request.send_header(key, value)
            if request.command == "HEAD" or response.status in (204, 304):
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_header("Transfer-Encoding", "chunked")
            request.end_headers()
            while chunk := response.read1(65536):
                request.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                request.wfile.flush()
            request.wfile.write(b"0\r\n\r\n")
            request.wfile.flush()
        except (OSError, AttributeError):
            # The client went away (a watch cancelled), or stop() closed the upstream under us.
            request.close_connection = True
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def requests(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self.records)


def request_rule(method: str, path: str) -> tuple[Rule, str | None] | None:
    """The RBAC (group, resource, verb) a request needs, and its namespace; None: discovery."""
    url = urlsplit(path)
    parts = [p for p in url.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None  # /version, /api, /apis, /apis/<group>/<version>: allowed to everyone
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    query = parse_qs(url.query)
    verb = {
        "GET": "watch"
        if query.get("watch", ["false"])[0] in ("true", "1")
        else ("get" if named else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return (group, resource, verb), namespace


# -- helpers ------------------------------------------------------------------------------------


def helm(cluster: ControlPlane, *args: str, check: bool = True) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": "/tmp/objmig-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/objmig-helm/config",
        "HELM_DATA_HOME": "/tmp/objmig-helm/data",
    }
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text, matched by name and labels."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name == name and all(item in label_text for item in wanted):
            return float(value)
    return None


def write_token_kubeconfig(
    path: Path, server: str, ca_file: Path, token: str, namespace: str
) -> None:
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": "objmig-operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "objmig",
                "context": {"cluster": "local", "user": "objmig-operator", "namespace": namespace},
            }
        ],
        "current-context": "objmig",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    tmp.replace(path)  # atomic: the operator never reads half a file


def kubectl_as(
    cluster: ControlPlane, kubeconfig: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """kubectl with another kubeconfig (the operator's), not the admin one."""
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def can_i(cluster: ControlPlane, user: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", f"--as={user}", *args, check=False)
    return result.stdout.strip() == "yes"


# -- tests --------------------------------------------------------------------------------------


def test_kustomize_manifests_pass_a_server_side_dry_run(k8s_cluster: ControlPlane) -> None:
    created = []
    for namespace in ("objmig-system", "team-a"):
        if k8s_cluster.kubectl("create", "namespace", namespace, check=False).returncode == 0:
            created.append(namespace)
    try:
        for directory in (MANIFESTS / "base", MANIFESTS / "overlays" / "namespaced"):
            out = k8s_cluster.kubectl("apply", "-k", str(directory), "--dry-run=server").stdout
            assert "deployment.apps/objmig created (server dry run)" in out or (
                "deployment.apps/objmig configured (server dry run)" in out
            ), out
            assert "clusterrole.rbac.authorization.k8s.io/objmig" in out, out
    finally:
        for namespace in created:
            k8s_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def test_helm_installed_operator_runs_as_its_service_account_and_cuts_over(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    postgres_server: EmbeddedPostgres,
    database_url: str,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    release_ns = k8s_namespace
    apps = f"{k8s_namespace[:50]}-apps"
    release = f"objmig-{secrets.token_hex(3)}"  # contains the chart name: fullname == release
    operator_sa = f"system:serviceaccount:{release_ns}:{release}"
    worker_sa = f"{release}-worker"
    metrics_port, health_port = free_port(), free_port()
    kubeconfig = tmp_path / "operator.kubeconfig"
    pki = k8s_cluster.pki
    assert pki is not None
    proxy = RecordingProxy(k8s_cluster.server, pki.ca_cert, pki.serving_cert, pki.serving_key)
    proxy.start()
    k8s_cluster.kubectl("create", "namespace", apps)

    values = {
        "image": {"repository": "objmig", "tag": "test"},
        "watchNamespaces": [apps],
        "externalDatabase": {"url": database_url},
        "operator": {
            "metricsPort": metrics_port,
            "healthPort": health_port,
            "statusInterval": 1,
            "extraEnv": [{"name": "KUBECONFIG", "value": str(kubeconfig)}],
        },
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    name = "photos"
    installed = False
    try:
        # -- install; the operator's token is for the ServiceAccount the chart just made ---
        notes = helm(
            k8s_cluster,
            "install",
            release,
            str(CHART),
            "--namespace",
            release_ns,
            "--values",
            str(values_file),
        )
        installed = True
        # NOTES: the next step, and the Argo CD health checks verbatim.
        assert "kubectl get om -n <namespace> -w" in notes
        for script in sorted((ROOT / "docs" / "argocd-health").glob("*.lua")):
            assert f"resource.customizations.health.{script.stem}: |" in notes
            body = "\n".join("      " + line for line in script.read_text().splitlines())
            assert body in notes, f"{script.name} is not in NOTES verbatim"
        # The chart copies the ledger Secret to the served namespace: no plain-URL warning.
        assert "WARNING" not in notes
        # The worker ServiceAccount it suggests is the one it made in the served namespace.
        assert f"spec.workers.serviceAccountName: {release}-worker" in notes, notes
        token = k8s_cluster.kubectl(
            "create", "token", release, "-n", release_ns, "--duration=2h"
        ).stdout.strip()
        write_token_kubeconfig(kubeconfig, proxy.url, pki.ca_cert, token, release_ns)
        whoami = kubectl_as(k8s_cluster, kubeconfig, "auth", "whoami", "-o", "json")
        assert whoami.returncode == 0, whoami.stderr
        assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == operator_sa

        wait_until(
            lambda: http_get(f"http://127.0.0.1:{health_port}/healthz") is not None,
            timeout=90,
            what="the operator's /healthz",
        )
        timings["install_to_healthy"] = time.monotonic() - started
        pods = k8s_cluster.kubectl_json(
            "get", "pods", "-n", release_ns, "-l", "app.kubernetes.io/component=operator"
        )["items"]
        assert len(pods) == 1
        assert pods[0]["spec"]["serviceAccountName"] == release
        operator_pod = pods[0]["metadata"]["name"]

        # -- a migration with both cutover actions, so the Secret and ConfigMap rules run ---
        source, target = await s3_seed.bucket(), await s3_seed.bucket()
        expected = {}
        for i in range(12):
            seeded = await s3_seed.put_object(source, f"img/{i:03d}.jpg", 2048 + i)
            expected[seeded.key] = seeded.etag
        creds = s3_server.credentials
        k8s_cluster.apply_yaml(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "s3-creds"},
                    "stringData": {
                        "accessKeyId": creds.access_key_id,
                        "secretAccessKey": creds.secret_access_key,
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "photos-app"},
                    "data": {"BUCKET": source},
                },
            ],
            namespace=apps,
        )
        async with catalog_database(postgres_server, list(expected), source) as catalog_dsn:
            k8s_cluster.apply_yaml(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "catalog"},
                    "stringData": {"dsn": catalog_dsn},
                },
                namespace=apps,
            )
            side = {
                "endpoint": s3_server.endpoint_url,
                "region": "us-east-1",
                "addressingStyle": "path",
                "credentialsSecretRef": {"name": "s3-creds"},
            }
            k8s_cluster.apply_yaml(
                {
                    "apiVersion": "objmig.dev/v1alpha1",
                    "kind": "ObjectMigration",
                    "metadata": {"name": name},
                    "spec": {
                        "source": {**side, "bucket": source},
                        "target": {**side, "bucket": target},
                        "workers": {"parallelism": 2, "serviceAccountName": worker_sa},
                        "retry": {"attempts": 2, "backoff": {"initial": "50ms", "max": "200ms"}},
                        "cutover": {
                            "configMapRef": {"name": "photos-app", "data": {"BUCKET": target}},
                            "catalog": {
                                "dsnSecretRef": {"name": "catalog", "key": "dsn"},
                                "table": "assets",
                                "keyColumn": "key",
                                "locationColumn": "location",
                            },
                        },
                    },
                },
                namespace=apps,
            )
            applied = time.monotonic()
            k8s_cluster.kubectl(
                "wait",
                "--for=condition=CutOver",
                f"objectmigrations.objmig.dev/{name}",
                "-n",
                apps,
                "--timeout=240s",
                timeout=255,
            )
            timings["apply_to_cutover"] = time.monotonic() - applied
            rows = await catalog_rows(catalog_dsn)
        resource = k8s_cluster.kubectl_json("get", "objectmigrations.objmig.dev", name, "-n", apps)
        status = resource["status"]

        # -- the migration really happened ---------------------------------------------------
        listing = await s3_client.list_objects_v2(Bucket=target)
        assert {o["Key"]: normalise_etag(o["ETag"]) for o in listing["Contents"]} == expected
        assert status["progress"]["objects"]["succeeded"] == len(expected)
        config_map = k8s_cluster.kubectl_json("get", "configmap", "photos-app", "-n", apps)
        assert config_map["data"]["BUCKET"] == target
        assert rows == {k: f"s3://{target}/{k}" for k in expected}
        events = k8s_cluster.kubectl_json(
            "get", "events", "-n", apps, "--field-selector", f"involvedObject.name={name}"
        )["items"]
        assert "CutOver" in {e["reason"] for e in events}, [e["reason"] for e in events]
        worker_pods = k8s_cluster.kubectl_json(
            "get", "pods", "-n", apps, "-l", f"objmig.dev/migration={name}"
        )["items"]
        assert worker_pods
        for pod in worker_pods:
            assert pod["spec"]["serviceAccountName"] == worker_sa
            assert pod["spec"]["automountServiceAccountToken"] is False
            env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
            # Workers read the ledger URL from the chart's Secret copy in their namespace.
            assert env["OBJMIG_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": f"{release}-database",
                "key": "url",
            }

        # -- /metrics of the running operator match the CR's counters -------------------------
        labels = {"namespace": apps, "migration": name}
        progress = status["progress"]

        def metrics_match() -> bool:
            text = http_get(f"http://127.0.0.1:{metrics_port}/metrics") or ""
            return (
                metric(text, "objmig_objects", **labels, state="verified")
                == progress["objects"]["succeeded"]
                and metric(text, "objmig_bytes", **labels, state="verified")
                == progress["bytes"]["succeeded"]
                and metric(text, "objmig_cut_over", **labels) == 1
                and metric(text, "objmig_phase", **labels, phase="CutOver") == 1
            )

        wait_until(metrics_match, timeout=30, what="per-migration metrics equal to the status")
        text = http_get(f"http://127.0.0.1:{metrics_port}/metrics") or ""
        assert metric(text, "objmig_cutover_ready", **labels) == 1
        assert metric(text, "objmig_objects_in_flight", **labels) == 0
        assert (metric(text, "objmig_status_patches_total", **labels) or 0) >= 1
        assert (metric(text, "objmig_reconciles_total", **labels) or 0) >= 1
        assert metric(text, "objmig_throughput_bytes_per_second", **labels) is not None

        # -- RBAC: what the operator asked for is exactly what the chart grants -------------------
        requests = proxy.requests()
        denied = [r for r in requests if r[2] in (401, 403)]
        assert not denied, f"requests refused to {operator_sa}: {denied}"
        observed: set[Rule] = set()
        for method, path, _ in requests:
            found = request_rule(method, path)
            if found is None:
                continue
            rule, namespace = found
            if rule == ("authentication.k8s.io", "selfsubjectreviews", "create"):
                continue  # the test's own `kubectl auth whoami` with the operator's kubeconfig
            assert namespace in (None, apps), f"request outside the served namespace: {path}"
            observed.add(rule)
        role = k8s_cluster.kubectl_json("get", "role", release, "-n", apps)
        cluster_role = k8s_cluster.kubectl_json("get", "clusterrole", release)
        granted = rule_set(role["rules"]) | rule_set(cluster_role["rules"])
        print("observed requests (group, resource, verb):", *sorted(observed), sep="\n  ")
        assert observed <= granted, observed - granted
        assert granted - observed <= UNEXERCISED.keys(), granted - observed - UNEXERCISED.keys()
        log = k8s_cluster.pod_log(release_ns, operator_pod)
        for word in ("Forbidden", "Not enough permissions", "Failed to post an event"):
            assert word not in log, f"{word!r} in the operator log"
        # ... and nothing more: no deletes but of its Jobs, no pods, no reach outside the
        # served namespace.
        assert not can_i(
            k8s_cluster, operator_sa, "delete", "objectmigrations.objmig.dev", "-n", apps
        )
        assert not can_i(k8s_cluster, operator_sa, "delete", "jobs", "-n", "default")
        assert not can_i(k8s_cluster, operator_sa, "list", "pods", "-n", apps)
        assert not can_i(k8s_cluster, operator_sa, "list", "secrets", "-n", apps)
        assert not can_i(
            k8s_cluster, operator_sa, "patch", "objectmigrations.objmig.dev", "-n", "default"
        )
        for verb, resource in (
            ("get", "secrets"),
            ("list", "objectmigrations.objmig.dev"),
            ("create", "jobs"),
            ("get", "pods"),
        ):
            assert not can_i(
                k8s_cluster, f"system:serviceaccount:{apps}:{worker_sa}", verb, resource, "-n", apps
            )
        timings["total"] = time.monotonic() - started
        print("timings:", {k: round(v, 1) for k, v in timings.items()})
    finally:
        teardown = time.monotonic()
        if installed:
            # The operator must still run to remove its finalizer.
            k8s_cluster.kubectl(
                "delete",
                "objectmigrations.objmig.dev",
                "--all",
                "-n",
                apps,
                "--timeout=60s",
                check=False,
                timeout=70,
            )
            helm(
                k8s_cluster,
                "uninstall",
                release,
                "--namespace",
                release_ns,
                "--wait",
                "--timeout=60s",
                check=False,
            )
        k8s_cluster.kubectl("delete", "namespace", apps, "--wait=false", check=False)
        proxy.stop()
        print(f"teardown took {time.monotonic() - teardown:.1f}s")
        print(f"teardown took {time.monotonic() - teardown:.1f}s")


def test_cluster_wide_rbac_grants_every_namespace_what_the_operator_uses(
    k8s_cluster: ControlPlane, k8s_namespace: str, objmig_crds: list[str]
) -> None:
    """The default (cluster-wide) ClusterRole, applied for real, allows the operator's requests
    in any namespace - including Kopf's cross-namespace list/watch - and nothing on pods.

    The cluster-wide operator itself is not run here: it would reconcile other tests'
    migrations in this shared cluster. The namespaced test above proves the rules sufficient;
    this one proves the ClusterRole carries them to every namespace.
    """
    release = f"objmig-{secrets.token_hex(3)}"
    rendered = yaml.safe_load_all(
        helm(
            k8s_cluster,
            "template",
            release,
            str(CHART),
            "--namespace",
            k8s_namespace,
            "--set",
            "externalDatabase.existingSecret=db",
        )
    )
    rbac = [o for o in rendered if o and o["kind"] in
            ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]  # fmt: skip
    k8s_cluster.apply_yaml(rbac, namespace=k8s_namespace)
    user = f"system:serviceaccount:{k8s_namespace}:{release}"
    try:
        role = next(o for o in rbac if o["kind"] == "ClusterRole")
        for group, resource, verb in sorted(rule_set(role["rules"])):
            plural, _, sub = resource.partition("/")
            target = f"{plural}.{group}" if group else plural
            extra = [f"--subresource={sub}"] if sub else []
            if group == "apiextensions.k8s.io":
                assert can_i(k8s_cluster, user, verb, target, *extra), (verb, target)
            else:
                scope = ["--all-namespaces"] if verb in ("list", "watch") else ["-n", "default"]
                assert can_i(k8s_cluster, user, verb, target, *extra, *scope), (verb, target)
        assert not can_i(k8s_cluster, user, "list", "pods", "--all-namespaces")
        assert not can_i(k8s_cluster, user, "list", "secrets", "--all-namespaces")
        # Jobs are the one thing it deletes (those of a namespace being deleted).
        assert not can_i(
            k8s_cluster, user, "delete", "objectmigrations.objmig.dev", "-n", "default"
        )
        assert not can_i(k8s_cluster, user, "delete", "pods", "-n", "default")
        assert not can_i(k8s_cluster, user, "list", "namespaces")
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            k8s_cluster.kubectl("delete", kind, release, "--wait=false", check=False)
