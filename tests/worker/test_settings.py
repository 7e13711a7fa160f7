"""Settings: names as in DESIGN.md, read once from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Backend, load_settings
from worker.temporal import tls_config

ALL_NAMES = Path(__file__).resolve().parents[2] / ".env.example"


def test_defaults_are_the_embedded_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEMPORAL_ADDRESS", "SKYRUN_BACKEND", "GITHUB_TOKEN", "SKYRUN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.backend is Backend.LOCAL
    assert settings.temporal_target == "127.0.0.1:7233"
    assert settings.temporal_task_queue == "skyrun"
    assert settings.public_url == "http://localhost:8000"
    assert settings.allowed_repos == ["*"]
    assert settings.slack_allowed_users == []
    assert settings.github_webhook_secret is None
    assert not settings.github_configured and not settings.slack_configured
    assert tls_config(settings) is False


def test_environment_and_dotenv_are_read_with_their_documented_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SKYRUN_ALLOWED_REPOS=acme/*, other/repo\nSKYRUN_PUBLIC_URL=https://ci.example.com/\n"
        "GITHUB_TOKEN=\nSKYRUN_BACKEND=skypilot\nSKYRUN_SLACK_ALLOWED_USERS=U1 U2\n"
    )
    monkeypatch.setenv("SKYRUN_PORT", "9000")
    settings = load_settings(_env_file=env_file)
    assert settings.allowed_repos == ["acme/*", "other/repo"]
    assert settings.public_url == "https://ci.example.com"
    assert settings.github_token is None  # empty means unset, not an empty secret
    assert settings.backend is Backend.SKYPILOT
    assert settings.slack_allowed_users == ["U1", "U2"]
    assert settings.port == 9000


def test_secrets_never_show_in_repr() -> None:
    settings = load_settings(_env_file=None, GITHUB_TOKEN="ghp_supersecret", TEMPORAL_API_KEY="k-1")
    assert "ghp_supersecret" not in repr(settings)
    assert "k-1" not in repr(settings)


def test_bad_values_are_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="SKYRUN_BACKEND"):
        load_settings(_env_file=None, SKYRUN_BACKEND="kubernetes")


def test_temporal_cloud_api_key_implies_tls_and_cert_paths_are_loaded(tmp_path: Path) -> None:
    assert tls_config(load_settings(_env_file=None, TEMPORAL_API_KEY="key")) is True
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    tls = tls_config(
        load_settings(_env_file=None, TEMPORAL_TLS_CERT_PATH=cert, TEMPORAL_TLS_KEY_PATH=key)
    )
    assert not isinstance(tls, bool)
    assert tls.client_cert == b"CERT" and tls.client_private_key == b"KEY"


def test_every_setting_is_listed_in_env_example() -> None:
    from worker.settings import Settings

    listed = ALL_NAMES.read_text()
    for field in Settings.model_fields.values():
        assert field.alias and f"{field.alias}=" in listed, field.alias


def test_worker_queue_is_stable_for_a_host_and_data_dir(tmp_path: Path) -> None:
    a = load_settings(_env_file=None, SKYRUN_DATA_DIR=tmp_path / "a")
    b = load_settings(_env_file=None, SKYRUN_DATA_DIR=tmp_path / "b")
    assert (
        a.worker_queue == load_settings(_env_file=None, SKYRUN_DATA_DIR=tmp_path / "a").worker_queue
    )
    assert a.worker_queue != b.worker_queue
    assert a.worker_queue.startswith("skyrun@")


def test_log_store_defaults_under_the_data_dir_and_can_be_shared(tmp_path: Path) -> None:
    alone = load_settings(_env_file=None, SKYRUN_DATA_DIR=tmp_path / "w1")
    assert alone.logs_dir == tmp_path / "w1" / "logs"
    shared = load_settings(
        _env_file=None, SKYRUN_DATA_DIR=tmp_path / "w2", SKYRUN_LOG_DIR=tmp_path / "logs"
    )
    assert shared.logs_dir == tmp_path / "logs"
    assert shared.worker_queue != alone.worker_queue  # the log store is not the worker identity


def test_tls_alone_uses_the_system_roots_and_a_ca_path_is_loaded(tmp_path: Path) -> None:
    tls = tls_config(load_settings(_env_file=None, TEMPORAL_TLS="true"))
    assert not isinstance(tls, bool)
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key) == (None, None, None)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    tls = tls_config(load_settings(_env_file=None, TEMPORAL_TLS_CA_PATH=ca))
    assert not isinstance(tls, bool) and tls.server_root_ca_cert == b"CA"


async def test_temporal_cloud_settings_configure_the_client() -> None:
    from worker.temporal import connect

    settings = load_settings(
        _env_file=None,
        TEMPORAL_ADDRESS="us-east-1.aws.api.temporal.io:7233",
        TEMPORAL_NAMESPACE="skyrun.a1b2c",
        TEMPORAL_API_KEY="cloud-key",
    )
    client = await connect(settings, lazy=True)  # lazy: no connection is made
    config = client.service_client.config
    assert config.target_host == "us-east-1.aws.api.temporal.io:7233"
    assert client.namespace == "skyrun.a1b2c"
    assert config.api_key == "cloud-key"
    assert config.tls is True


def test_the_deployment_cap_defaults_to_no_limit_and_refuses_negatives() -> None:
    assert load_settings(_env_file=None).max_concurrent_runs == 0
    assert load_settings(_env_file=None, SKYRUN_MAX_CONCURRENT_RUNS="4").max_concurrent_runs == 4
    with pytest.raises(ValueError, match="SKYRUN_MAX_CONCURRENT_RUNS"):
        load_settings(_env_file=None, SKYRUN_MAX_CONCURRENT_RUNS="-1")


# Cost (issue 14): prices for infrastructure without a catalog.


def test_hour_prices_default_to_free_and_read_their_documented_names() -> None:
    settings = load_settings(_env_file=None)
    assert (settings.gpu_hour_usd, settings.cpu_hour_usd) == (0, 0)
    priced = load_settings(_env_file=None, SKYRUN_GPU_HOUR_USD="2.5", SKYRUN_CPU_HOUR_USD="0.04")
    assert (priced.gpu_hour_usd, priced.cpu_hour_usd) == (2.5, 0.04)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "two dollars"])
@pytest.mark.parametrize("name", ["SKYRUN_GPU_HOUR_USD", "SKYRUN_CPU_HOUR_USD"])
def test_bad_hour_prices_are_refused_at_startup_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        load_settings(_env_file=None, **{name: value})
    assert name in str(refused.value)
