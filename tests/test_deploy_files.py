"""Docker cannot run here, so the Dockerfile and compose file are checked against the code."""

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from app.cli import parser
from app.core import tracing
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
    assert services["migrate"]["command"][:2] == ["dmrelay", "migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


@pytest.mark.parametrize("service", ["api", "worker", "migrate"])
def test_compose_commands_exist_and_variables_are_settings(service):
    spec = COMPOSE["services"][service]
    assert _parses(spec["command"])
    # dmrelay's settings, and OpenTelemetry's variables for tracing (app/core/tracing.py).
    known = {name.upper() for name in Settings.model_fields} | set(tracing.ENVIRONMENT)
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
    # Multi-stage: built in one, run from a fresh slim image that has no build tools.
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", DOCKERFILE, re.M)
    assert len(stages) >= 2 and {image for image, _ in stages} == {"python:3.11-slim"}
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    assert "COPY --from=build /opt/venv /opt/venv" in final
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1] not in {"root", "0"}
    cmd = re.search(r"^CMD (\[.*\])", final, re.M).group(1)
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


ENVIRONMENT_SERVICES = ("api", "worker", "migrate", "sandbox")
LOCK = (ROOT / "deploy" / "requirements.lock").read_text()


def test_dockerfile_installs_from_the_lock_and_checks_health():
    assert "pip install --require-hashes -r /tmp/requirements.lock" in DOCKERFILE
    assert "COPY deploy/requirements.lock /tmp/requirements.lock" in DOCKERFILE
    assert "pip install --no-deps -e ." in DOCKERFILE  # nothing from outside the lock
    check = re.search(r"^\s+CMD (\[.*\])$", DOCKERFILE, re.M).group(1)
    assert "HEALTHCHECK" in DOCKERFILE and yaml.safe_load(check)[:3] == [
        "dmrelay",
        "api",
        "--check",
    ]
    assert _parses(yaml.safe_load(check))


def test_the_lock_pins_every_runtime_dependency_within_its_range():
    from packaging.requirements import Requirement

    pins = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", LOCK, re.M))
    lines = LOCK.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z0-9_.-]+==", line):
            assert "--hash=sha256:" in lines[number + 1], line  # --require-hashes needs them
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The image has the S3 store and tracing's SDK and exporter, so both are settings away.
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["s3"] + extras["tracing"]
    for line in wanted:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(pins[name]), (name, pins[name])


def test_dockerignore_keeps_local_state_out_of_the_build():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".dmrelay", ".env", "media", ".git", "**/__pycache__"} <= set(ignored)
    # What the image copies is not ignored.
    copied = {"app", "migrations", "pyproject.toml", "README.md", "deploy"}
    assert not copied & set(ignored)


def test_every_service_restarts_and_has_a_true_health_check():
    services = COMPOSE["services"]
    for name, spec in services.items():
        assert spec.get("restart") in {"unless-stopped", "always"} or name == "migrate", name
    # One-shot, retried: its own wait for PostgreSQL, then compose's restarts on failure.
    assert services["migrate"]["restart"].startswith("on-failure")
    assert "--wait" in services["migrate"]["command"]
    assert services["migrate"]["healthcheck"] == {"disable": True}
    # Over TCP: the image's first, socket-only server must not pass for the real one.
    postgres = services["postgres"]["healthcheck"]["test"]
    assert postgres[:2] == ["CMD", "pg_isready"] and postgres[postgres.index("-h") + 1] in {
        "127.0.0.1",
        "localhost",
    }
    assert "PONG" in " ".join(services["redis"]["healthcheck"]["test"])
    for name, command in (("api", ["api", "--check"]), ("worker", ["worker", "--check"])):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1:4] == ["dmrelay", *command]
        assert _parses(test[1:])
    assert services["worker"]["environment"]["WORKER_HTTP_PORT"]


def test_services_start_once_what_they_need_is_healthy():
    services = COMPOSE["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ENVIRONMENT_SERVICES)
def test_compose_passes_every_setting_through(service):
    environment = COMPOSE["services"][service]["environment"]
    assert {name.upper() for name in Settings.model_fields} <= set(environment)
    # Tracing is turned on by OpenTelemetry's variables, which reach the processes too.
    assert set(tracing.ENVIRONMENT) <= set(environment)


def test_the_sandbox_is_an_optional_profile():
    sandbox = COMPOSE["services"]["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    assert _parses(sandbox["command"])
    assert sandbox["environment"]["SANDBOX_WEBHOOK_URL"] == "http://api:8000/webhooks/instagram"
    assert "http://sandbox:8001" in (ROOT / "docker-compose.yml").read_text()


def test_readme_shows_compose_the_first_key_and_profile_and_scaling():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up" in readme
    assert "docker compose exec api dmrelay keys create" in readme
    assert "dmrelay profiles add" in readme[readme.index("docker compose exec api dmrelay keys") :]
    assert "--scale worker=3" in readme


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
def test_docker_compose_accepts_the_file(tmp_path):
    """Where docker-compose is installed: it reads the file, resolving settings from .env."""
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    (tmp_path / ".env").write_text("SECRET_KEY=from-dotenv\nMAX_ATTEMPTS=7\n")
    done = subprocess.run(
        ["docker-compose", "--profile", "sandbox", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"]},
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert resolved["worker"]["environment"]["MAX_ATTEMPTS"] == "7"
    assert resolved["api"]["environment"]["SECRET_KEY"] == "from-dotenv"
    assert set(resolved) == {"postgres", "redis", "migrate", "api", "worker", "sandbox"}


def _exported_series() -> set[str]:
    """Every dmrelay series name /metrics can show, by family type."""
    from prometheus_client import REGISTRY

    import app.core.metrics  # noqa: F401 - defines them
    from app.messages.monitoring import BacklogCollector
    from app.messages.repository import Backlog

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    backlog = BacklogCollector(Backlog({"pending": 0}, None), 0, 0)
    return {
        family.name + suffix
        for family in [*REGISTRY.collect(), *backlog.collect()]
        if family.name.startswith("dmrelay_")
        for suffix in suffixes[family.type]
    }


def test_the_grafana_dashboard_shows_every_metric_and_only_real_ones():
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    shown = set(re.findall(r"\bdmrelay_[a-z_]+", " ".join(expressions)))
    exported = _exported_series()
    assert shown <= exported, shown - exported
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exported}
    assert {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in shown} == families
