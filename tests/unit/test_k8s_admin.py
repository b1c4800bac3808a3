"""deploy/k8s/admin: the toolbox Job operators `kubectl exec` lotlens-admin into, validated like
every other manifest and given what the admin commands need (the migrate Job's configuration)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.k8s import ROOT, build, kubeconform, objects

# Where the toolbox is applied beside (deploy/k8s/README.md, "Running lotlens-admin").
OVERLAYS = ("overlays/local", "overlays/production")


def container(job: dict[str, Any]) -> dict[str, Any]:
    [only] = job["spec"]["template"]["spec"]["containers"]
    return dict(only)


def references(pod: dict[str, Any]) -> set[tuple[str, str]]:
    """The (kind, name) of every Secret and ConfigMap a pod's containers read."""
    found: set[tuple[str, str]] = set()
    for container in pod["containers"] + pod.get("initContainers", []):
        for source in container.get("envFrom", []):
            found |= {(kind, source[key]["name"]) for kind, key in
                      (("ConfigMap", "configMapRef"), ("Secret", "secretRef")) if key in source}
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {})
            found |= {(kind, ref[key]["name"]) for kind, key in
                      (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")) if key in ref}
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_admin_job_reads_the_secret_and_config_map_the_overlay_deploys(overlay: str) -> None:
    # The local overlay's secretGenerator named its Secret `lotlens-secrets-<hash>` (and its
    # Deployments after it): the toolbox, built on its own, asked for `lotlens-secrets` and never
    # started (CreateContainerConfigError). A name the overlay does not build (production's Secret,
    # from the secret store) must be one its services read as well.
    [job] = objects("admin")
    deployed = objects(overlay)
    built = {(doc["kind"], doc["metadata"]["name"]) for doc in deployed}
    read = set().union(*(references(doc["spec"]["template"]["spec"]) for doc in deployed
                         if doc["kind"] in ("Deployment", "Job")))
    missing = references(job["spec"]["template"]["spec"]) - built - read
    assert not missing, f"{overlay} has none of {sorted(missing)}; it has {sorted(built & read)}"


def test_the_admin_job_is_valid_in_strict_mode() -> None:
    manifests = build("admin")
    result = kubeconform(manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["summary"] == {"valid": 1, "invalid": 0, "errors": 0, "skipped": 0}


def test_the_admin_job_runs_the_admin_image_with_the_migrate_jobs_configuration_and_security() -> None:
    [job] = objects("admin")
    migrate = next(doc for doc in objects("base") if doc["kind"] == "Job")
    admin, reference = container(job), container(migrate)
    assert job["metadata"]["namespace"] == "lotlens"
    assert admin["image"] == "lotlens/admin:0.1.0"
    for field in ("envFrom", "env", "securityContext", "volumeMounts"):
        assert admin[field] == reference[field], field
    pod, reference_pod = job["spec"]["template"]["spec"], migrate["spec"]["template"]["spec"]
    for field in ("securityContext", "automountServiceAccountToken", "enableServiceLinks", "volumes"):
        assert pod[field] == reference_pod[field], field


def test_the_image_builds_lotlens_admin_and_the_readme_says_how_to_run_it() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"SERVICE=<[^>]*\badmin\b", dockerfile)
    readme = (ROOT / "deploy" / "k8s" / "README.md").read_text(encoding="utf-8")
    assert "--build-arg SERVICE=admin" in readme
    assert "kubectl -n lotlens exec -it job/lotlens-admin -- lotlens-admin" in readme


def test_the_toolbox_outlasts_a_long_rebuild() -> None:
    # It was up an hour (`sleep 3600`, `activeDeadlineSeconds: 3600`): a rebuild of a big log,
    # run in it, was killed at the hour every time (it resumes, but from a new pod, by hand).
    [job] = objects("admin")
    [script] = re.findall(r"\bsleep (\d+)\b", " ".join(container(job)["command"]))
    deadline, sleep = job["spec"]["activeDeadlineSeconds"], int(script)
    assert deadline >= sleep >= 24 * 3600, (deadline, sleep)
