"""deploy/k8s under test: the tools that build and validate it, and the schemas they validate against.

The Go tools are built once into a cache by `scripts/tools.sh`; the Kubernetes schemas come from the
`kubernetes-validate` package, KEDA's and the Prometheus Operator's from their vendored CRDs
(deploy/schemas/keda, deploy/schemas/prometheus-operator).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
TARGETS = ("base", "overlays/local", "overlays/production")
KUBERNETES_VERSION = "v1.34.0"
CRDS = sorted([*(ROOT / "deploy" / "schemas" / "keda").glob("*.yaml"),
               *(ROOT / "deploy" / "schemas" / "prometheus-operator").glob("*.yaml")])
Doc = dict[str, Any]


@functools.cache
def tools() -> Path:
    """The directory of kustomize and kubeconform (built on first use, then reused)."""
    done = subprocess.run([str(ROOT / "scripts" / "tools.sh")], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


@functools.cache
def build(target: str | Path) -> str:
    """`kustomize build` of a target directory under deploy/k8s (or of a kustomization elsewhere)."""
    done = subprocess.run([str(tools() / "kustomize"), "build", str(K8S / target)],
                          capture_output=True, text=True, check=True)
    return done.stdout


def objects(target: str | Path) -> list[Doc]:
    """The objects a target builds to."""
    return [doc for doc in yaml.safe_load_all(build(target)) if doc]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    """The objects of a kind (and name)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one object of a kind and name."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind} {name}: {len(found)}"
    return found[0]


def _strict(schema: Any) -> Any:
    """A CRD's OpenAPI schema with unknown fields refused wherever it lists its fields."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def schemas() -> Path:
    """kubeconform's schema directory: strict Kubernetes schemas with local `$ref`s, and the CRDs'."""
    bundled = files("kubernetes_validate") / "kubernetes-json-schema"
    source = Path(str(bundled / f"{KUBERNETES_VERSION}-local-strict"))
    crds = hashlib.sha256(b"".join(path.read_bytes() for path in CRDS)).hexdigest()[:12]
    target = tools() / "schemas" / f"k8s-{KUBERNETES_VERSION}-kv{version('kubernetes-validate')}-crds-{crds}"
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.json"):
        text = path.read_text(encoding="utf-8").replace('"/api/_definitions.json#', '"_definitions.json#')
        schema = json.loads(text)
        schema.pop("$id", None)  # refs resolve against the local file, never https://kubernetes.io
        (target / path.name).write_text(json.dumps(schema), encoding="utf-8")
    for crd_path in CRDS:
        crd = yaml.safe_load(crd_path.read_text(encoding="utf-8"))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for served in crd["spec"]["versions"]:
            schema = _strict(served["schema"]["openAPIV3Schema"])
            schema["properties"]["apiVersion"] = {"enum": [f"{group}/{served['name']}"]}
            schema["properties"]["kind"] = {"enum": [kind]}
            name = f"{kind.lower()}-{group.split('.')[0]}-{served['name']}.json"
            (target / name).write_text(json.dumps(schema), encoding="utf-8")
    (target / ".complete").touch()
    return target


def kubeconform(manifests: str) -> subprocess.CompletedProcess[str]:
    """Validate manifests offline, in strict mode, every kind against a schema (none skipped)."""
    location = str(schemas() / "{{.ResourceKind}}{{.KindSuffix}}.json")
    return subprocess.run([str(tools() / "kubeconform"), "-strict", "-summary", "-output", "json",
                           "-schema-location", location, "-"],
                          input=manifests, capture_output=True, text=True, check=False)
