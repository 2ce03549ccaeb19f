"""The operator's own settings, read from its environment (the Deployment sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

from objmig.api.base import SecretKeySelector
from objmig.api.types import Duration


class OperatorConfig(BaseModel):
    """How the operator runs and what it gives worker pods."""

    database_url: str = Field(description="Ledger PostgreSQL URL the operator connects to.")
    database_secret: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the ledger URL for worker pods (in the migration's "
        "namespace). Absent: workers get the URL as a plain value — for trials only.",
    )
    worker_image: str = Field(default="objmig:latest", description="Default worker image.")
    worker_service_account: str | None = Field(
        default=None,
        description="ServiceAccount of worker pods when the spec names none (one with no "
        "permissions; the Helm chart creates it).",
    )
    worker_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
        description="Default worker resources when the spec sets none.",
    )
    status_interval: float = Field(default=5.0, gt=0, description="Seconds between status patches.")
    job_ttl_seconds: int = Field(default=86400, ge=0, description="ttlSecondsAfterFinished.")
    backoff_limit_per_index: int = Field(default=3, ge=0, description="Pod retries per index.")
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty: the whole cluster."
    )
    ledger_wait: Duration | None = Field(
        default=None,
        description="How long the operator at start-up, and each worker, waits for an "
        "unreachable ledger before giving up (default 10m).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read ``OBJMIG_*`` variables."""
        env = os.environ if environ is None else environ
        secret = env.get("OBJMIG_DATABASE_SECRET")  # "name/key"
        values: dict[str, object] = {"database_url": env["OBJMIG_DATABASE_URL"]}
        if secret:
            name, _, key = secret.partition("/")
            values["database_secret"] = SecretKeySelector(name=name, key=key or "url")
        if env.get("OBJMIG_WORKER_SERVICE_ACCOUNT"):
            values["worker_service_account"] = env["OBJMIG_WORKER_SERVICE_ACCOUNT"]
        if "OBJMIG_WORKER_IMAGE" in env:
            values["worker_image"] = env["OBJMIG_WORKER_IMAGE"]
        if "OBJMIG_STATUS_INTERVAL" in env:
            values["status_interval"] = float(env["OBJMIG_STATUS_INTERVAL"])
        if "OBJMIG_JOB_TTL_SECONDS" in env:
            values["job_ttl_seconds"] = int(env["OBJMIG_JOB_TTL_SECONDS"])
        if env.get("OBJMIG_LEDGER_WAIT"):
            values["ledger_wait"] = env["OBJMIG_LEDGER_WAIT"]
        if env.get("OBJMIG_WATCH_NAMESPACES"):
            values["namespaces"] = [n for n in env["OBJMIG_WATCH_NAMESPACES"].split(",") if n]
        return cls.model_validate(values)
