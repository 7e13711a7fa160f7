"""Typed settings, read once from the environment and `.env` (each is listed in .env.example)."""

from __future__ import annotations

import hashlib
import os
import socket
from enum import Enum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.budget import MonthlyBudget, parse_monthly_budgets


class Backend(str, Enum):
    LOCAL = "local"
    SKYPILOT = "skypilot"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.replace(",", " ").split() if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    github_webhook_secret: SecretStr | None = Field(None, alias="GITHUB_WEBHOOK_SECRET")
    github_token: SecretStr | None = Field(None, alias="GITHUB_TOKEN")
    github_app_id: str | None = Field(None, alias="GITHUB_APP_ID")
    github_app_private_key: SecretStr | None = Field(None, alias="GITHUB_APP_PRIVATE_KEY")
    github_app_private_key_path: Path | None = Field(None, alias="GITHUB_APP_PRIVATE_KEY_PATH")
    github_api_url: str = Field("https://api.github.com", alias="GITHUB_API_URL")

    slack_bot_token: SecretStr | None = Field(None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, alias="SLACK_SIGNING_SECRET")
    slack_api_url: str = Field("https://slack.com/api/", alias="SLACK_API_URL")

    allowed_repos: Annotated[list[str], NoDecode] = Field(["*"], alias="SKYRUN_ALLOWED_REPOS")
    slack_allowed_users: Annotated[list[str], NoDecode] = Field(
        [], alias="SKYRUN_SLACK_ALLOWED_USERS"
    )
    public_url: str = Field("http://localhost:8000", alias="SKYRUN_PUBLIC_URL")
    host: str = Field("127.0.0.1", alias="SKYRUN_HOST")
    port: int = Field(8000, alias="SKYRUN_PORT")
    data_dir: Path = Field(Path(".skyrun"), alias="SKYRUN_DATA_DIR")
    log_dir: Path | None = Field(None, alias="SKYRUN_LOG_DIR")
    backend: Backend = Field(Backend.LOCAL, alias="SKYRUN_BACKEND")
    run_pages: bool = Field(True, alias="SKYRUN_RUN_PAGES")
    worker_metrics_port: int | None = Field(None, alias="SKYRUN_WORKER_METRICS_PORT")
    worker_gone_seconds: int = Field(120, alias="SKYRUN_WORKER_GONE_SECONDS", ge=5)

    temporal_address: str | None = Field(None, alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", alias="TEMPORAL_NAMESPACE")
    temporal_task_queue: str = Field("skyrun", alias="TEMPORAL_TASK_QUEUE")
    temporal_tls: bool = Field(False, alias="TEMPORAL_TLS")
    temporal_tls_cert_path: Path | None = Field(None, alias="TEMPORAL_TLS_CERT_PATH")
    temporal_tls_key_path: Path | None = Field(None, alias="TEMPORAL_TLS_KEY_PATH")
    temporal_tls_ca_path: Path | None = Field(None, alias="TEMPORAL_TLS_CA_PATH")
    temporal_api_key: SecretStr | None = Field(None, alias="TEMPORAL_API_KEY")
    temporal_ui_url: str = Field("http://localhost:8233", alias="TEMPORAL_UI_URL")
    temporal_port: int = Field(7233, alias="SKYRUN_TEMPORAL_PORT")
    temporal_ui_port: int = Field(8233, alias="SKYRUN_TEMPORAL_UI_PORT")

    skypilot_api_server_endpoint: str | None = Field(None, alias="SKYPILOT_API_SERVER_ENDPOINT")
    skypilot_bucket_url: str = Field("", alias="SKYPILOT_BUCKET_URL")

    # Local backend sandbox (worker/backends/sandbox.py).
    local_sandbox: bool = Field(True, alias="SKYRUN_LOCAL_SANDBOX")
    local_mounts: Annotated[list[str], NoDecode] = Field([], alias="SKYRUN_LOCAL_MOUNTS")
    local_bucket_idle_days: float = Field(7.0, alias="SKYRUN_LOCAL_BUCKET_IDLE_DAYS", gt=0)

    # Sweeps (`/skyrun sweep`): the most runs one sweep may start.
    max_sweep: int = Field(16, alias="SKYRUN_MAX_SWEEP", ge=1)
    # Concurrency caps (worker/capacity.py): runs computing at once across the deployment.
    max_concurrent_runs: int = Field(0, alias="SKYRUN_MAX_CONCURRENT_RUNS", ge=0, le=10_000)
    # Cost (issue 14): prices for infrastructure without a price catalog (worker/cost.py).
    gpu_hour_usd: float = Field(0.0, alias="SKYRUN_GPU_HOUR_USD", ge=0, allow_inf_nan=False)
    cpu_hour_usd: float = Field(0.0, alias="SKYRUN_CPU_HOUR_USD", ge=0, allow_inf_nan=False)
    # Budgets (issue 14): runs estimated above this wait for approval (0 = never).
    approval_usd: float = Field(0.0, alias="SKYRUN_APPROVAL_USD", ge=0, allow_inf_nan=False)
    approval_timeout_s: int = Field(86400, alias="SKYRUN_APPROVAL_TIMEOUT_S", ge=1)
    """How long a run waits for approval before it ends cancelled."""
    slack_approvers: Annotated[list[str], NoDecode] = Field([], alias="SKYRUN_SLACK_APPROVERS")
    # Monthly budgets (worker/budget.py, worker/ledger.py): `acme/*=500,acme/big=2000`.
    monthly_budgets_text: str = Field("", alias="SKYRUN_MONTHLY_BUDGETS")

    @field_validator("local_mounts", mode="before")
    @classmethod
    def _split_mounts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("local_mounts")
    @classmethod
    def _check_mounts(cls, value: list[str]) -> list[str]:
        for entry in value:
            _local_mount(entry)
        return value

    @property
    def local_mount_specs(self) -> list[tuple[Path, bool]]:
        """SKYRUN_LOCAL_MOUNTS as (path, writable) pairs."""
        return [_local_mount(entry) for entry in self.local_mounts]

    @field_validator("allowed_repos", "slack_allowed_users", "slack_approvers", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split(value)

    @field_validator("monthly_budgets_text")
    @classmethod
    def _check_monthly_budgets(cls, value: str) -> str:
        parse_monthly_budgets(value)
        return value

    @property
    def monthly_budgets(self) -> list[MonthlyBudget]:
        """SKYRUN_MONTHLY_BUDGETS, parsed (checked at startup)."""
        return parse_monthly_budgets(self.monthly_budgets_text)

    @field_validator("public_url", "temporal_ui_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def logs_dir(self) -> Path:
        """The log store: one directory the bot reads and every worker writes."""
        if self.log_dir is not None:
            return self.log_dir.expanduser().resolve()
        return self.data_path / "logs"

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def worker_queue(self) -> str:
        """This worker's own task queue, stable across restarts on the same host and data dir."""
        digest = hashlib.sha256(str(self.data_path).encode()).hexdigest()[:8]
        return f"{self.temporal_task_queue}@{socket.gethostname()}-{digest}"

    @property
    def github_configured(self) -> bool:
        return self.github_token is not None or self.github_app_id is not None

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None and self.slack_signing_secret is not None


LOCAL_MOUNT_INVALID = (
    "SKYRUN_LOCAL_MOUNTS: {entry!r}: {problem}; give comma-separated absolute paths of "
    "existing host directories or files, each read-only unless it ends in :rw "
    "(e.g. /data/datasets,/scratch:rw)"
)


def _local_mount(entry: str) -> tuple[Path, bool]:
    """One SKYRUN_LOCAL_MOUNTS entry: `PATH`, `PATH:ro` or `PATH:rw`."""
    text, writable = entry, False
    head, sep, mode = entry.rpartition(":")
    if sep and mode in ("ro", "rw"):
        text, writable = head, mode == "rw"
    path = Path(text)
    if not path.is_absolute():
        raise ValueError(LOCAL_MOUNT_INVALID.format(entry=entry, problem="not an absolute path"))
    if not path.exists():
        raise ValueError(LOCAL_MOUNT_INVALID.format(entry=entry, problem="does not exist"))
    if ":" in text:
        raise ValueError(LOCAL_MOUNT_INVALID.format(entry=entry, problem="':' in a path"))
    return Path(os.path.normpath(path)), writable


def load_settings(**overrides: object) -> Settings:
    """Read settings once; keyword overrides use the environment names (for tests and the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
