"""Docker cannot run here, so the Dockerfile and compose file are checked against the code."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from app.cli import parser
from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _parses(argv: list[str]) -> bool:
    assert argv[0] == "dmrelay"
    try:
        parser().parse_args(argv[1:])
    except SystemExit:
        return False
    return True


def test_compose_runs_the_whole_stack():
    services = COMPOSE["services"]
    assert {"api", "worker", "postgres", "redis", "migrate"} <= set(services)
    assert services["migrate"]["command"] == ["dmrelay", "migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


@pytest.mark.parametrize("service", ["api", "worker", "migrate"])
def test_compose_commands_exist_and_variables_are_settings(service):
    spec = COMPOSE["services"][service]
    assert _parses(spec["command"])
    known = {name.upper() for name in Settings.model_fields}
    assert set(spec["environment"]) <= known
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= set(spec["environment"])


def test_compose_urls_point_at_its_own_services():
    env = COMPOSE["services"]["api"]["environment"]
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert Settings(database_url=env["DATABASE_URL"]).database_url.startswith(
        "postgresql+asyncpg://"
    )


def test_api_port_matches_command_and_image():
    command = COMPOSE["services"]["api"]["command"]
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in COMPOSE["services"]["api"]["ports"]
    assert f"EXPOSE {port}" in DOCKERFILE


def test_dockerfile_is_small_non_root_and_runs_a_real_command():
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["python:3.11-slim"]
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in {"root", "0"}
    cmd = re.search(r"^CMD (\[.*\])", DOCKERFILE, re.M).group(1)
    assert _parses(yaml.safe_load(cmd))
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.M):
        for path in shlex.split(source):
            assert path.startswith("/") or (ROOT / path).exists(), path


def test_readme_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])
    commands = re.findall(r"^make (\w+)$", first_screen, re.M)
    assert commands == ["run", "test"]
    for target in commands:
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_api_and_worker_share_the_media_directory():
    for name in ("api", "worker"):
        spec = COMPOSE["services"][name]
        media_dir = spec["environment"]["MEDIA_DIR"]
        assert any(v.endswith(f":{media_dir}") for v in spec["volumes"]), name
    assert "mkdir media && chown dmrelay media" in DOCKERFILE
