"""``objmig operator``: run the Kubernetes operator (Kopf) for this cluster or some namespaces."""

from __future__ import annotations

import logging
import os

import click


@click.command("operator")
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable). Default: $OBJMIG_WATCH_NAMESPACES, "
    "else the whole cluster.",
)
@click.option(
    "--metrics-port", type=int, default=8080, show_default=True, help="Port of /metrics (0: off)."
)
@click.option(
    "--health-port",
    type=int,
    default=8081,
    show_default=True,
    help="Port of the probe endpoints /healthz (liveness) and /readyz (readiness); 0: off.",
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=False,
    show_default=True,
    help="Work only while holding a coordination.k8s.io Lease; other replicas stand by.",
)
@click.option(
    "--leader-election-namespace",
    default=None,
    help="Namespace of the Lease (default $POD_NAMESPACE, else default).",
)
@click.option(
    "--leader-election-id", default="objmig-operator", show_default=True, help="Lease name."
)
@click.option(
    "--status-interval",
    type=float,
    default=None,
    help="Seconds between status updates (default $OBJMIG_STATUS_INTERVAL or 5).",
)
@click.option(
    "--log-format", type=click.Choice(["json", "plain"]), default="json", show_default=True
)
@click.option(
    "--verbose",
    is_flag=True,
    help="Also log what goes well: every handler run and every API watch event "
    "(by default only changes, warnings and errors are logged).",
)
def operator(
    namespaces: tuple[str, ...],
    metrics_port: int,
    health_port: int,
    leader_elect: bool,
    leader_election_namespace: str | None,
    leader_election_id: str,
    status_interval: float | None,
    log_format: str,
    verbose: bool,
) -> None:
    """Reconcile ObjectMigrations: Jobs, status, gated cutover. Needs OBJMIG_DATABASE_URL."""
    os.environ["OBJMIG_METRICS_PORT"] = str(metrics_port)
    os.environ["OBJMIG_HEALTH_PORT"] = str(health_port)
    if leader_elect:
        namespace = leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default"
        os.environ["OBJMIG_LEADER_ELECTION"] = f"{namespace}/{leader_election_id}"
    if status_interval is not None:
        os.environ["OBJMIG_STATUS_INTERVAL"] = str(status_interval)
    watched = list(namespaces) or [
        n for n in os.environ.get("OBJMIG_WATCH_NAMESPACES", "").split(",") if n
    ]
    if "OBJMIG_DATABASE_URL" not in os.environ:
        raise click.UsageError("OBJMIG_DATABASE_URL must name the ledger database")

    import kopf

    import objmig.controller.handlers  # noqa: F401 - importing registers the handlers

    kopf.configure(log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN)
    if not verbose:
        # Kopf says "Timer 'reconcile' succeeded." for every resource at every status
        # interval, which buries everything else. Its warnings and errors still come.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,
        clusterwide=not watched,
        namespaces=watched,
    )
