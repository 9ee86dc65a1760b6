"""Every file in cluster/ validates against the schema of the tool that reads it, and keeps the
security properties docs/cluster.md promises: token auth on, dashboard / job API never exposed
outside the cluster, the Serve API key from a Kubernetes Secret.

- launcher YAMLs: Ray's own ray-schema.json and the prepare + validate steps of `ray up`;
- KubeRay manifests: KubeRay v1.7.0's CRD schemas through cluster/schemas/validate.py (the schemas
  are in the repo), plus the keys below;
- serve configs: Ray Serve's ServeDeploySchema, and raylm's own serve section for the app args.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO
CLUSTER = REPO / "cluster"
LAUNCHER_YAMLS = ["aws.yaml", "local.yaml"]
KUBERAY = CLUSTER / "kuberay"
KUBERAY_VALIDATOR = CLUSTER / "schemas" / "validate.py"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _ray_cluster_specs() -> dict[str, dict]:
    """The RayCluster spec inside every KubeRay manifest (RayJob and RayService embed one)."""
    specs = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in _docs(path):
            spec = {"RayCluster": lambda d: d["spec"], "RayJob": lambda d: d["spec"]["rayClusterSpec"],
                    "RayService": lambda d: d["spec"]["rayClusterConfig"]}.get(doc["kind"])
            if spec:
                specs[f"{path.name}:{doc['kind']}"] = spec(doc)
    return specs


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,), value
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


def _torch_pin() -> str:
    import torch

    return "torch==" + torch.__version__.split("+")[0]


# ---------------------------------------------------------------- cluster launcher


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_passes_rays_schema_and_ray_up_validation(name):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(CLUSTER / name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)  # the file as written
    validate_config(prepare_config(copy.deepcopy(raw)))  # what `ray up` checks before touching the provider


def test_launcher_validation_rejects_a_broken_config():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(CLUSTER / "aws.yaml")
    raw["available_node_types"]["ray.worker.gpu"]["resources"] = {"GPU": 0.5}  # resources must be integers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(raw))


def test_aws_launcher_autoscales_gpu_workers_from_zero_behind_a_cpu_head():
    raw = _load(CLUSTER / "aws.yaml")
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for t in raw["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_types)


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_turns_token_auth_on_and_keeps_the_dashboard_on_loopback(name):
    raw = _load(CLUSTER / name)
    head_start = " ".join(raw["head_start_ray_commands"])
    worker_start = " ".join(raw["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in head_start
    assert "RAY_AUTH_MODE=token ray start --address" in worker_start
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the same token on every node
    setup = raw["head_setup_commands"] + raw["worker_setup_commands"]
    assert any("-e ~/raylm" in c for c in raw["head_setup_commands"])
    if name == "aws.yaml":  # raylm's image (cluster/Dockerfile pins torch): nothing pip-installed on a GPU node
        assert not any("pip" in c for c in raw["worker_setup_commands"]) and not any("torch" in c for c in setup)
        assert {raw["docker"]["image"].rsplit(":", 1)[1], raw["docker"]["head_image"].rsplit(":", 1)[1]} == \
            {"0.1.0-gpu", "0.1.0-cpu"} and all("/raylm:" in raw["docker"][k] for k in ("image", "head_image"))
    else:
        assert sum(_torch_pin() in c for c in setup) == 2  # torch pinned to the tested version, head and workers
    # Core dumps of Ray's processes would hold the cluster token and the Serve API key.
    assert "ulimit -c unlimited" not in head_start + worker_start
    if name == "local.yaml":
        assert "ulimit -c 0" in head_start


def test_aws_head_takes_no_work():
    raw = _load(CLUSTER / "aws.yaml")
    assert raw["available_node_types"][raw["head_node_type"]]["resources"]["CPU"] == 0
    assert "--num-cpus=0" in " ".join(raw["head_start_ray_commands"])


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_heads_take_no_work_and_the_ports_the_firewall_comment_names_are_fixed(name):
    """local.yaml's comment told an operator to open 8076 between the machines while its start commands left
    the object manager's port random (aws.yaml fixed it), and its head took work that docs/cluster.md says
    launcher heads do not."""
    raw = _load(CLUSTER / name)
    head, workers = " ".join(raw["head_start_ray_commands"]), " ".join(raw["worker_start_ray_commands"])
    assert "--num-cpus=0" in head
    for start in (head, workers):
        assert "--object-manager-port=8076" in start
    if "--node-manager-port=" in head + workers:
        assert head.count("--node-manager-port=8077") == workers.count("--node-manager-port=8077") == 1
    comment = (CLUSTER / name).read_text().split("cluster_name:")[0]
    if "8076" in comment:
        assert "8077" in comment or "--node-manager-port" not in head


def test_aws_security_group_opens_nothing_beyond_the_launchers_ssh_rule():
    raw = _load(CLUSTER / "aws.yaml")
    extra_rules = raw["provider"]["security_group"].get("IpPermissions", [])
    for rule in extra_rules:
        assert rule.get("FromPort") == rule.get("ToPort") == 22, f"extra inbound rule opens {rule}"


# ---------------------------------------------------------------- KubeRay


KUBERAY_FILES = sorted(p.name for p in KUBERAY.glob("*.yaml"))


def _kuberay_validator():
    """cluster/schemas/validate.py as a module (cluster/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kuberay_validate", KUBERAY_VALIDATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kuberay_manifests_pass_the_v1_7_crd_schemas():
    result = subprocess.run([sys.executable, str(KUBERAY_VALIDATOR), *map(str, KUBERAY.glob("*.yaml"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 KubeRay documents checked, 0 failing" in result.stdout


def test_kuberay_validator_rejects_a_worker_group_without_max_replicas(tmp_path):
    doc = _load(KUBERAY / "raycluster.yaml")
    del doc["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    result = subprocess.run([sys.executable, str(KUBERAY_VALIDATOR), str(tmp_path / "bad.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "maxReplicas" in result.stdout


def test_kuberay_validator_rejects_an_unknown_gcs_fault_tolerance_backend():
    doc = _load(KUBERAY / "rayservice.yaml")
    doc["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"] = {"backend": "etcd"}
    error = _kuberay_validator().document_errors(doc)
    assert error is not None and "gcsFaultToleranceOptions/backend" in error and "etcd" in error


def test_kuberay_validator_refuses_a_field_the_crd_does_not_declare():
    """What kubectl's strict field validation refuses: a typo passed the schema check before."""
    doc = _load(KUBERAY / "raycluster.yaml")
    doc["spec"]["workerGroupSpec"] = doc["spec"]["workerGroupSpecs"]  # the typo beside the real key
    assert _kuberay_validator().document_errors(doc) == "RayCluster at spec/workerGroupSpec: unknown field (not in the CRD's schema)"
    doc = _load(KUBERAY / "raycluster.yaml")
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert "headGroupSpec/template/spec/containers/0/imagePullPolicyy: unknown field" in _kuberay_validator().document_errors(doc)
    doc = _load(KUBERAY / "raycluster.yaml")
    doc["metadata"]["labels"] = {"team": "ml"}  # free-form maps stay free
    assert _kuberay_validator().document_errors(doc) is None


def test_kuberay_validator_says_when_no_document_was_a_kuberay_one(tmp_path):
    (tmp_path / "other.yaml").write_text("apiVersion: ray.io/v1\nkind: RayFoo\n")
    result = subprocess.run([sys.executable, str(KUBERAY_VALIDATOR), str(tmp_path / "other.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "no KubeRay document" in result.stdout and "0 failing" not in result.stdout


def test_kuberay_manifests_carry_the_required_keys():
    kinds = {doc["kind"]: doc for name in KUBERAY_FILES for doc in _docs(KUBERAY / name)}
    assert {"RayCluster", "RayJob", "RayService", "PersistentVolumeClaim"} <= set(kinds)
    for kind in ("RayCluster", "RayJob", "RayService"):
        assert kinds[kind]["apiVersion"] == "ray.io/v1"
    cluster = kinds["RayCluster"]["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    gpu = cluster["workerGroupSpecs"][0]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    head_limits = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    # A head that takes no work pulls the CPU image, a GPU worker the CUDA one (the head pulled ~2.5 GB of CUDA).
    for spec in (cluster, kinds["RayJob"]["spec"]["rayClusterSpec"]):
        assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"].endswith("-cpu")
        assert spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"].endswith("-gpu")
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_runs_the_pipeline_with_the_jobs_runtime_env_on_the_same_cluster_spec():
    from ray.runtime_env import RuntimeEnv

    from raylm.runtime import WORKER_ENV_VARS

    job = _load(KUBERAY / "rayjob.yaml")["spec"]
    assert job["entrypoint"].startswith("python jobs/pipeline.py --config jobs/configs/image_tune.yaml")
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    # Ray's own validation of the fields; working_dir is a path inside the image (checked below).
    RuntimeEnv(**{k: v for k, v in runtime_env.items() if k != "working_dir"})
    assert runtime_env["working_dir"] == "/home/ray/raylm" and runtime_env["env_vars"] == _load(REPO / "jobs" / "runtime_env.yaml")["env_vars"]
    assert WORKER_ENV_VARS.items() <= runtime_env["env_vars"].items()
    assert job["shutdownAfterJobFinishes"] is True
    assert job["rayClusterSpec"] == _load(KUBERAY / "raycluster.yaml")["spec"]  # one cluster description


@pytest.mark.parametrize("where", sorted(_ray_cluster_specs()))
def test_every_ray_cluster_has_token_auth_and_a_cluster_internal_head_service(where):
    spec = _ray_cluster_specs()[where]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["authOptions"]["secretName"] == "raylm-ray-token"
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert not head.get("enableIngress") and "ingressOptions" not in head
    for container in _containers(spec):
        for env in container.get("env", []):
            assert not (env["name"] == "RAY_AUTH_MODE" and env.get("value") != "token")
            assert env["name"] != "RAY_AUTH_TOKEN" or "valueFrom" in env  # never a literal token


@pytest.mark.parametrize("where", sorted(_ray_cluster_specs()))
def test_every_kuberay_head_takes_no_work(where):
    assert _ray_cluster_specs()[where]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_rayservice_survives_a_lost_node_and_a_lost_head():
    """>= 2 replicas, at most one per node, worker pods for all of them; the GCS persisted (fault tolerance)."""
    from raylm.serve import load_serve_config

    spec = _load(KUBERAY / "rayservice.yaml")["spec"]
    args = dict(_serve_app(yaml.safe_load(spec["serveConfigV2"])).args)
    args.pop("artifact")
    cfg = load_serve_config(None, [f"{k}={v}" for k, v in args.items()])
    assert cfg.min_replicas >= 2 and cfg.max_replicas_per_node == 1
    (workers,) = spec["rayClusterConfig"]["workerGroupSpecs"]
    assert workers["minReplicas"] >= cfg.min_replicas and workers["maxReplicas"] >= cfg.max_replicas
    ft = spec["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft["backend"] in ("rocksdb", "redis") and (ft["backend"] == "rocksdb") == ("redisAddress" not in ft)


def _serve_app(config: dict):
    from ray.serve.schema import ServeDeploySchema

    (app,) = ServeDeploySchema.model_validate(config).applications
    return app


def test_no_manifest_exposes_a_service_outside_the_cluster():
    for name in KUBERAY_FILES:
        for doc in _docs(KUBERAY / name):
            for path, value in _walk(doc):
                if path[-1] in ("type", "serviceType") and isinstance(value, str):
                    assert value not in ("LoadBalancer", "NodePort"), f"{name}: {'.'.join(map(str, path))}={value}"
                assert path[-1] not in ("nodePort", "hostPort"), f"{name}: {'.'.join(map(str, path))}"
    service = _load(KUBERAY / "rayservice.yaml")["spec"]["serveService"]
    assert service["spec"]["type"] == "ClusterIP"


# ---------------------------------------------------------------- Serve


def _serve_configs() -> dict[str, dict]:
    rayservice = _load(KUBERAY / "rayservice.yaml")
    return {"cluster/serve-config.yaml": _load(CLUSTER / "serve-config.yaml"),
            "rayservice.yaml serveConfigV2": yaml.safe_load(rayservice["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("where", ["cluster/serve-config.yaml", "rayservice.yaml serveConfigV2"])
def test_serve_configs_parse_with_serves_schema_and_raylms_serve_section(where):
    from ray.serve.schema import ServeDeploySchema

    from raylm.serve import load_serve_config

    schema = ServeDeploySchema.model_validate(_serve_configs()[where])
    (app,) = schema.applications
    assert app.import_path == "raylm.serve.app:app_builder"
    args = dict(app.args)
    artifacts = args.pop("artifact")
    assert artifacts and all(re.fullmatch(r"\w+=/mnt/raylm/\S+", a) for a in artifacts)  # tiers on shared storage
    cfg = load_serve_config(None, [f"{k}={v}" for k, v in args.items()])  # every arg is a real serve.* field
    assert cfg.api_key_env == "RAYLM_API_KEY"
    assert 0 < schema.http_options.request_timeout_s <= 60  # the proxies end slow or stalled requests


def test_rayservice_serves_exactly_cluster_serve_config():
    configs = _serve_configs()
    assert configs["rayservice.yaml serveConfigV2"] == configs["cluster/serve-config.yaml"]


def test_rayservice_api_key_comes_from_a_secret_in_every_ray_container():
    spec = _load(KUBERAY / "rayservice.yaml")["spec"]["rayClusterConfig"]
    for container in _containers(spec):
        (key,) = [e for e in container.get("env", []) if e["name"] == "RAYLM_API_KEY"]
        assert "value" not in key
        assert key["valueFrom"]["secretKeyRef"] == {"name": "raylm-api-key", "key": "RAYLM_API_KEY"}


# ---------------------------------------------------------------- jobs/ and the image


def test_jobs_runtime_env_is_valid_and_carries_raylms_env_vars():
    from ray.runtime_env import RuntimeEnv

    from raylm.runtime import WORKER_ENV_VARS

    runtime_env = _load(REPO / "jobs" / "runtime_env.yaml")
    RuntimeEnv(**runtime_env)
    assert WORKER_ENV_VARS.items() <= runtime_env["env_vars"].items()
    assert {".git", "runs", ".gpu"} <= set(runtime_env["excludes"])  # keep the working-dir upload small


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "jobs").glob("*.py")))
def test_every_job_script_documents_its_ray_job_submit_command(script):
    import ast

    doc = ast.get_docstring(ast.parse((REPO / "jobs" / script).read_text())) or ""
    command = " ".join(doc.replace("\\\n", " ").split())
    assert "ray job submit" in command and "--working-dir ." in command, script
    assert "--runtime-env jobs/runtime_env.yaml" in command, script
    assert f"python jobs/{script}" in command, script


def test_dockerfile_pins_the_tested_torch_and_installs_the_repo():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f'"{_torch_pin()}"' in dockerfile
    assert re.search(r"^FROM \$\{BASE\}", dockerfile, re.M) and "rayproject/ray:2.60.0-py311-gpu" in dockerfile
    assert "WORKDIR /home/ray/raylm" in dockerfile
    working_dir = yaml.safe_load(_load(KUBERAY / "rayjob.yaml")["spec"]["runtimeEnvYAML"])["working_dir"]
    assert working_dir == "/home/ray/raylm"
