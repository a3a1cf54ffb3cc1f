"""The container files and the compose file say what the README promises: a base image
taken as a build argument, a non-root user, a health check on /healthz, and a compose
fleet whose settings are all real ones (a misspelt variable would be silently ignored)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kreaserve.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASES = {
    "Containerfile": "python:3.11-slim-bookworm",
    "Containerfile.cuda": "nvidia/cuda:",
}


@pytest.mark.parametrize("name", sorted(DEFAULT_BASES))
def test_containerfile_takes_its_base_runs_unprivileged_and_checks_health(name: str) -> None:
    text = (ROOT / name).read_text()
    base = re.search(r"^ARG BASE=(\S+)$", text, re.M)
    assert base and base.group(1).startswith(DEFAULT_BASES[name])
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert '"torch==2.13.0"' in text  # pinned, as scripts/bootstrap does


def test_compose_runs_postgres_minio_an_api_and_a_gpu_worker_with_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "api", "worker"} <= set(services)
    assert services["api"]["command"] == ["kreaserve", "serve", "--no-worker"]
    assert services["worker"]["command"] == ["kreaserve", "worker"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    known = {f"KREASERVE_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["KREASERVE_DATABASE_URL"].startswith("postgresql://")
        assert env["KREASERVE_S3_BUCKET"] and env["KREASERVE_S3_ENDPOINT_URL"]
        assert "KREASERVE_SECRET_KEY" not in env  # the database holds it
        unknown = {key for key in env if key.startswith("KREASERVE_")} - known
        assert not unknown, unknown
        Settings(
            **{
                key[len("KREASERVE_") :].lower(): value
                for key, value in env.items()
                if key.startswith("KREASERVE_")
            }
        )


def test_the_readme_shows_the_compose_file() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "compose.yaml" in readme and "scripts/build-image" in readme
