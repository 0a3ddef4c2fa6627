"""The Kubernetes manifests and the KServe InferenceService, checked offline:
rendered by kubectl kustomize, validated against a pinned Kubernetes version
and KServe's CRD schema, and held to the policies a cluster admin expects."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.slow  # runs kubectl and kubernetes-validate

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
OVERLAYS = ("cpu", "gpu")
KSERVE_SCHEMA = ROOT / "tests" / "fixtures" / "kserve" / "inferenceservice-v1beta1-trimmed.json"


def render(overlay):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (make test installs it)"
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    text = render(request.param)
    return request.param, text, [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found


def pod_specs(objects):
    """(kind/name, pod spec) of every workload."""
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield f"CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_every_object_is_valid_kubernetes_in_strict_mode(rendered, tmp_path):
    overlay, text, objects = rendered
    assert {o["kind"] for o in objects} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "CronJob",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
    }
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(text)
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(validate), "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_container_is_locked_down_and_limited(rendered):
    _, _, objects = rendered
    for where, pod in pod_specs(objects):
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, where
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container.get("securityContext", {})
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), where
            assert {"cpu", "memory"} <= set(container["resources"].get("requests", {})), where


def test_the_api_is_probed_drains_before_it_is_killed_and_spreads(rendered):
    _, _, objects = rendered
    (api,) = by_kind(objects, "Deployment", "demand-api")
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (settings,) = by_kind(objects, "ConfigMap", "demand-settings")
    drain = int(settings["data"]["DEMAND_GRACEFUL_TIMEOUT"])
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + drain
    assert api["spec"]["replicas"] >= 2
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    (pvc,) = by_kind(objects, "PersistentVolumeClaim", claims["models"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]} == {
        "demand-settings",
        "demand-tokens",
        "demand-store",
    }
    # Clients reach the api through the pod's nginx only: it listens where the probes, the Service and the
    # network policy point, and the api on loopback.
    (proxy,) = pod["initContainers"]
    assert proxy["restartPolicy"] == "Always" and proxy["image"].startswith("nginxinc/nginx-unprivileged:")
    (port,) = proxy["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"], probe
    assert settings["data"]["DEMAND_HOST"] == "127.0.0.1"
    (service,) = by_kind(objects, "Service", "demand-api")
    assert service["spec"]["ports"][0]["targetPort"] == port["containerPort"]
    (policy,) = by_kind(objects, "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": port["containerPort"], "protocol": "TCP"}]}]
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("demand-proxy")]
    assert f"listen {port['containerPort']};" in config["data"]["default.conf"]
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


def test_the_pods_proxy_config_is_deploy_nginx_conf_for_the_pods_own_api():
    from service.testing import POD_PROXY_CONFIG, pod_proxy_config

    assert POD_PROXY_CONFIG.read_text() == pod_proxy_config(), "generate it again: service.testing.pod_proxy_config"


def test_training_writes_the_registry_and_retraining_never_overlaps(rendered):
    _, _, objects = rendered
    (cron,) = by_kind(objects, "CronJob", "demand-retrain")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0
    assert cron["spec"]["successfulJobsHistoryLimit"] >= 1 and cron["spec"]["failedJobsHistoryLimit"] >= 1
    for where, pod in pod_specs(objects):
        if where.startswith(("Job/", "CronJob/")):
            (container,) = pod["containers"]
            assert container["command"][:2] in (["demand", "train"], ["demand", "retrain"])
            mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
            assert not mount.get("readOnly")


def test_the_gpu_overlay_asks_for_gpus_and_requires_cuda(rendered):
    overlay, _, objects = rendered
    for where, pod in pod_specs(objects):
        limits = pod["containers"][0]["resources"]["limits"]
        tolerations = pod.get("tolerations", [])
        if overlay == "gpu":
            assert limits.get("nvidia.com/gpu") == 1, where
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations), where
        else:
            assert "nvidia.com/gpu" not in limits and not tolerations, where
    (api,) = by_kind(objects, "Deployment", "demand-api")
    env = {e["name"]: e["value"] for e in api["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert (env.get("DEMAND_REQUIRE_GPU") == "1") == (overlay == "gpu")


# ---------------------------------------------------------------- KServe


def closed(schema):
    """The schema with every object that lists its properties closed to others: the API
    server prunes unknown fields silently, which for us would be a field lost."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def kserve_schema():
    fixture = json.loads(KSERVE_SCHEMA.read_text())
    assert fixture["source"]["repository"] == "kserve/kserve" and fixture["source"]["commit"]
    return closed(fixture["schema"])


def test_the_inference_service_follows_kserves_crd(kserve_schema):
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    jsonschema.validate(service, kserve_schema)
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DEMAND_PORT"] == "8080"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in service["spec"]["predictor"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["demand-models"]


def test_the_kserve_check_catches_a_misspelt_field(kserve_schema):
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    service["spec"]["predictor"]["containers"][0]["readinesProbe"] = service["spec"]["predictor"]["containers"][0].pop(
        "readinessProbe"
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, kserve_schema)


# ---------------------------------------------------------------- Dask

DASK_SCHEMA = ROOT / "tests" / "fixtures" / "dask" / "daskcluster-v1.json"


def test_the_dask_cluster_follows_the_operators_crd_and_its_pods_are_valid_kubernetes(tmp_path):
    cluster = yaml.safe_load((K8S / "dask" / "daskcluster.yaml").read_text())
    job = yaml.safe_load((K8S / "dask" / "score-job.yaml").read_text())
    fixture = json.loads(DASK_SCHEMA.read_text())
    assert fixture["source"]["package"] == "dask-kubernetes" and fixture["source"]["version"]
    jsonschema.validate(cluster, closed(fixture["schema"]))
    scheduler, worker = cluster["spec"]["scheduler"], cluster["spec"]["worker"]
    embedded = [  # what the operator makes of them, as Kubernetes validates it
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demand-dask-scheduler"}, "spec": scheduler["spec"]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demand-dask-worker"}, "spec": worker["spec"]},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "demand-dask-scheduler"},
            "spec": scheduler["service"],
        },
        job,
    ]
    path = tmp_path / "dask.yaml"
    path.write_text(yaml.safe_dump_all(embedded))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(validate), "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pods = [scheduler["spec"], worker["spec"], job["spec"]["template"]["spec"]]
    assert {c["image"] for pod in pods for c in pod["containers"]} == {"demand-trainer:latest"}
    mounts = {m["mountPath"]: m for c in worker["spec"]["containers"] + job["spec"]["template"]["spec"]["containers"]
              for m in c["volumeMounts"]}  # fmt: skip
    assert mounts["/app/models"]["readOnly"] and "/data" in mounts  # the registry where the job reads it
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--scheduler") + 1] == f"tcp://{cluster['metadata']['name']}-scheduler:8786"


def test_the_dask_check_catches_a_misspelt_field():
    cluster = yaml.safe_load((K8S / "dask" / "daskcluster.yaml").read_text())
    cluster["spec"]["workers"] = cluster["spec"].pop("worker")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, closed(json.loads(DASK_SCHEMA.read_text())["schema"]))
