"""``objmig operator``: run the Kubernetes operator (Kopf) for this cluster or some namespaces."""

from __future__ import annotations

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
    help="Port of the liveness endpoint /healthz.",
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
def operator(
    namespaces: tuple[str, ...],
    metrics_port: int,
    health_port: int,
    status_interval: float | None,
    log_format: str,
) -> None:
    """Reconcile ObjectMigrations: Jobs, status, gated cutover. Needs OBJMIG_DATABASE_URL."""
    os.environ["OBJMIG_METRICS_PORT"] = str(metrics_port)
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
    kopf.run(
        standalone=True,
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    )
