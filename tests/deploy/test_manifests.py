"""deploy/kubernetes and deploy/kserve: valid against Kubernetes' own schemas, and consistent with the server.

Run: .venv/bin/python -m pytest tests/deploy/test_manifests.py -q

Kubernetes objects are validated by kubernetes-validate (pinned in tools/requirements.txt) in strict mode, which
rejects unknown fields, against the oldest and the newest Kubernetes it ships that we state support for. KServe's
own CRD schemas are not shipped by any package reachable here (the kserve SDK wheel carries none), so the KServe
objects are checked in two parts: their containers (a ClusterServingRuntime's, an InferenceService predictor's)
against Kubernetes' core/v1 Container schema, strictly; their KServe fields against what the runtime declares.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from torchship.server_process import server_binary

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy/kubernetes"
KSERVE = ROOT / "deploy/kserve"
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # the versions docs/deploy.md states
IMAGE_USER = 65532  # deploy/Dockerfile's USER


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects(folder: Path) -> dict[str, dict[str, Any]]:
    """kind -> object, one object of each kind per folder."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in load(path):
            assert doc["kind"] not in found, f"two {doc['kind']} objects in {folder}"
            found[doc["kind"]] = doc
    return found


def validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def as_pod(container: dict[str, Any]) -> dict[str, Any]:
    """A Pod around one container, so Kubernetes' core/v1 Container schema judges it."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [container]}}


def flag_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"{flag}="):
            return a.split("=", 1)[1]
    return None


@pytest.fixture(scope="module")
def server_flags() -> set[str]:
    """Every long option torchship-server's --help lists."""
    out = subprocess.run([str(server_binary()), "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


K8S = objects(KUBERNETES)
(RUNTIME,) = load(KSERVE / "clusterservingruntime.yaml")
ISVCS = [doc for path in sorted(KSERVE.glob("inferenceservice*.yaml")) for doc in load(path)]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"])
def test_kubernetes_objects_are_valid_strictly(kind: str, version: str) -> None:
    validate(K8S[kind], version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kserve_containers_are_valid_kubernetes_containers(version: str) -> None:
    for container in RUNTIME["spec"]["containers"]:
        validate(as_pod(container), version)
    for isvc in ISVCS:
        model = dict(isvc["spec"]["predictor"]["model"])
        for kserve_field in ("modelFormat", "runtime", "protocolVersion", "storageUri", "runtimeVersion"):
            model.pop(kserve_field, None)
        validate(as_pod({"name": "kserve-container", "image": "torchship-server:0.1.0", **model}), version)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The check can fail: one letter off in a probe's name is an error, not a silently dropped field."""
    broken = copy.deepcopy(K8S["Deployment"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(broken, KUBERNETES_VERSIONS[-1])
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(as_pod(container), KUBERNETES_VERSIONS[-1])


def test_every_server_flag_in_the_manifests_exists(server_flags: set[str]) -> None:
    container = K8S["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for args in (container["args"], RUNTIME["spec"]["containers"][0]["args"]):
        unknown = {a.split("=")[0] for a in args if a.startswith("--")} - server_flags
        assert not unknown, f"torchship-server has no {sorted(unknown)}"


def test_the_grace_period_outlasts_prestop_and_the_drain_deadline() -> None:
    pod = K8S["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    prestop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain_s = int(flag_value(container["args"], "--drain-timeout-s") or 30)  # the server's default is 30
    assert pod["terminationGracePeriodSeconds"] > prestop_s + drain_s


def test_probes_ports_and_scraping_point_at_the_server() -> None:
    pod = K8S["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(flag_value(container["args"], "--http-port")) == ports["http"]
    assert int(flag_value(container["args"], "--grpc-port")) == ports["grpc"]
    assert flag_value(container["args"], "--host") == "0.0.0.0"  # the image's default is loopback-safe only inside
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/models", "/tmp"}
    assert pod["spec"]["securityContext"]["runAsUser"] == IMAGE_USER


def test_service_pdb_and_hpa_select_the_deployment() -> None:
    labels = K8S["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert K8S["Service"]["spec"]["selector"].items() <= labels.items()
    assert K8S["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = K8S["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", K8S["Deployment"]["metadata"]["name"])
    service_ports = {p["name"]: p["targetPort"] for p in K8S["Service"]["spec"]["ports"]}
    assert service_ports == {"http": "http", "grpc": "grpc"}


def test_the_kserve_runtime_speaks_v2_on_kserves_ports_from_the_model_mount() -> None:
    spec = RUNTIME["spec"]
    assert RUNTIME["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["torchship"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    args = container["args"]
    assert flag_value(args, "--model-repository") == "/mnt/models"  # where the storage initializer writes
    assert (flag_value(args, "--http-port"), flag_value(args, "--grpc-port")) == ("8080", "8081")
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["runAsUser"] == IMAGE_USER
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8080"


@pytest.mark.parametrize("isvc", ISVCS, ids=lambda d: d["metadata"]["name"])
def test_inference_services_ask_for_what_the_runtime_offers(isvc: dict[str, Any]) -> None:
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == RUNTIME["metadata"]["name"]
    assert model["modelFormat"]["name"] in [f["name"] for f in RUNTIME["spec"]["supportedModelFormats"]]
    assert model["protocolVersion"] in RUNTIME["spec"]["protocolVersions"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])  # a DNS-1035 label
    if model["protocolVersion"] == "grpc-v2":  # Knative routes one port: the server's gRPC one, as h2c
        assert model["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]


def test_the_image_checks_readiness_runs_unprivileged_and_execs_the_launcher() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\n?.*/v2/health/ready", dockerfile, re.MULTILINE)
    assert re.search(rf"^USER {IMAGE_USER}:{IMAGE_USER}$", dockerfile, re.MULTILINE)
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)
    assert entrypoint and yaml.safe_load(entrypoint.group(1))[0] == RUNTIME["spec"]["containers"][0]["command"][0]
