"""Cluster files: cluster.yaml against Ray's own launcher validation, the KubeRay manifests and Serve
configs against the repository (scripts, configs and import paths they name exist), and the job
wrapper against the commands docs/cluster.md shows."""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from resulic.errors import ConfigError
from resulic.cli.submit import JobRequest, build_command, request_from_env, submission_id

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
RAY_VERSION = next(
    line.split("==")[1].strip() for line in (REPO / "requirements.lock").read_text().splitlines() if line.startswith("ray==")
)
SECRET_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"postgres(ql)?://[^\s\"']*:[^\s\"'@]*@", r"password\s*[:=]"]


def manifests() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(K8S.glob("*.yaml"))}


def all_docs(kind: str) -> list[dict]:
    return [d for docs in manifests().values() for d in docs if d["kind"] == kind]


# -- cluster.yaml --------------------------------------------------------------------------------
def launcher_config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_the_launchers_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(launcher_config())  # what `ray up` does before talking to the cloud
    validate_config(prepared)  # ray-schema.json + the launcher's own checks
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["resources"].get("GPU", 0) == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [1, 8]
    assert all(t["min_workers"] == 0 for t in gpu_types.values()), "GPU workers scale from zero"


def test_the_validation_rejects_a_broken_cluster_yaml():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = launcher_config()
    broken["max_wokers"] = 4  # a typo: the launcher's schema allows no unknown keys
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    broken = launcher_config()
    broken["available_node_types"]["gpu-1x"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(copy.deepcopy(broken)))


def test_cluster_yaml_uses_our_ray_image_installs_the_lock_and_runs_mlflow_on_the_head():
    import ray

    cfg = launcher_config()
    image = cfg["docker"]["image"]
    assert RAY_VERSION == ray.__version__
    assert re.fullmatch(rf"rayproject/ray:{re.escape(RAY_VERSION)}-py311-cu12\d", image), image
    assert not any("ray-ml" in str(v) for k, v in cfg["docker"].items() if "image" in k), "ray-ml is deprecated"
    assert (REPO / "deploy" / "Dockerfile").read_text().count(f"FROM {image}") == 1, "the KubeRay image builds on the same"
    assert any("requirements.lock" in c and "-e ." in c for c in cfg["setup_commands"])
    head = " ".join(cfg["head_start_ray_commands"])
    assert "deploy/mlflow_server.sh start" in head and (REPO / "deploy" / "mlflow_server.sh").is_file()
    assert "MLFLOW_TRACKING_URI=http://" in head
    workers = " ".join(cfg["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers and "--address=$RAY_HEAD_IP:6379" in workers
    assert "-v /shared:/shared" in cfg["docker"]["run_options"]


def test_cluster_yaml_turns_token_auth_on_for_every_node_and_copies_the_token():
    """Ray 2.60 starts a head without auth unless RAY_AUTH_MODE=token (or a token file happens to
    exist), and its job API then runs anyone's code."""
    cfg = launcher_config()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all(re.search(r"export [^;]*RAY_AUTH_MODE=token[^;]*; ray start", c) for c in starts), key
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "ray get-auth-token --generate" in (REPO / "cluster.yaml").read_text()


def test_mlflow_server_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO / "deploy" / "mlflow_server.sh")], check=True)


def run_mlflow_server_script(tmp_path: Path, python_stub: str, **env: str) -> subprocess.CompletedProcess:
    """``deploy/mlflow_server.sh start`` with stub ``python`` (the SSM read) and ``mlflow`` commands
    first on PATH; the stub mlflow records its arguments and backend store URI in the state folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "python": f"#!/bin/sh\ncat >/dev/null\n{python_stub}\n",
        "mlflow": '#!/bin/sh\nprintf %s "$MLFLOW_BACKEND_STORE_URI" >"$RESULIC_MLFLOW_HOME/uri.tmp"\n'
                  'mv "$RESULIC_MLFLOW_HOME/uri.tmp" "$RESULIC_MLFLOW_HOME/mlflow-started-with"\n',
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "state"
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "RESULIC_MLFLOW_HOME": str(state),
            "RESULIC_MLFLOW_ARTIFACTS": "s3://a-bucket/resulic/mlartifacts", "RESULIC_MLFLOW_PORT": "1"}
    return subprocess.run(["bash", str(REPO / "deploy" / "mlflow_server.sh"), "start"], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_mlflow_server_script_fails_when_the_backend_store_cannot_be_read(tmp_path):
    """A failed parameter-store read is a one-line error naming what is missing, never a server on
    a SQLite file of the head's (the script once swallowed the failure with `2>/dev/null || true`)."""
    proc = run_mlflow_server_script(
        tmp_path, 'echo "Traceback (most recent call last):" >&2\n'
                  'echo "NoCredentialsError: Unable to locate credentials" >&2\nexit 1')
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "MLFLOW_BACKEND_STORE_URI is unset" in lines[0] and "/resulic/mlflow-backend-store-uri" in lines[0]
    assert "NoCredentialsError: Unable to locate credentials" in lines[0]
    assert not (tmp_path / "state" / "mlflow-started-with").exists() and not (tmp_path / "state" / "server.pid").exists()
    assert "sqlite" not in proc.stdout

    (tmp_path / "empty").mkdir()
    empty = run_mlflow_server_script(tmp_path / "empty", "exit 0")  # the read "succeeds" with nothing
    assert empty.returncode == 1 and "(empty value)" in empty.stderr


def test_mlflow_server_script_starts_on_the_parameter_stores_uri_without_printing_it(tmp_path):
    uri = "postgresql://mlflow:pw-in-the-uri@db.internal:5432/mlflow"
    proc = run_mlflow_server_script(tmp_path, f"printf %s '{uri}'")
    assert proc.returncode == 0, proc.stderr
    assert "mlflow backend store: postgresql (the URI itself is not printed)" in proc.stdout
    assert "pw-in-the-uri" not in proc.stdout + proc.stderr
    started = tmp_path / "state" / "mlflow-started-with"
    deadline = time.monotonic() + 30  # the server is started in the background (nohup ... &)
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.read_text() == uri


def test_mlflow_server_script_needs_the_artifact_store(tmp_path):
    proc = run_mlflow_server_script(tmp_path, "exit 0", RESULIC_MLFLOW_ARTIFACTS="")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "RESULIC_MLFLOW_ARTIFACTS is unset" in proc.stderr


@pytest.mark.parametrize("path", ["cluster.yaml", "deploy/mlflow_server.sh", "deploy/Dockerfile",
                                  *[f"deploy/k8s/{p.name}" for p in sorted(K8S.glob("*.yaml"))]])
def test_no_secrets_in_cluster_files(path):
    text = (REPO / path).read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text, re.IGNORECASE), f"{path}: matches {pattern}"


def test_cluster_model_config_is_sd21_with_the_shared_backbone():
    from resulic.config import ModelConfig, load_config

    hub = load_config(ModelConfig, REPO / "configs/model/sd21.yaml")
    shared = load_config(ModelConfig, REPO / "configs/model/sd21-shared.yaml")
    assert shared.backbone.source == "/shared/models/sd21-base"
    assert shared.model_copy(update={"backbone": hub.backbone}) == hub, "only backbone.source differs"


# -- KubeRay ---------------------------------------------------------------------------------------
def test_manifests_parse_with_the_expected_kinds():
    kinds = {(d["apiVersion"], d["kind"]) for docs in manifests().values() for d in docs}
    assert {("ray.io/v1", "RayJob"), ("ray.io/v1", "RayService"), ("apps/v1", "Deployment"), ("v1", "Service"),
            ("v1", "PersistentVolumeClaim"), ("v1", "ServiceAccount")} <= kinds


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    cluster = doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig")
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, g["template"]["spec"]) for name, g in groups]


def test_ray_clusters_in_manifests_match_our_ray_image_and_shared_volume():
    import ray

    claims = {d["metadata"]["name"] for d in all_docs("PersistentVolumeClaim")}
    accounts = {d["metadata"]["name"] for d in all_docs("ServiceAccount")}
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for doc in all_docs("RayJob") + all_docs("RayService"):
        cluster = doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig")
        assert cluster["rayVersion"] == ray.__version__
        gpus = []
        for name, spec in pod_specs(doc):
            assert spec["serviceAccountName"] in accounts
            assert {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v} <= claims
            (container,) = spec["containers"]
            assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"]
            gpus.append(int(container["resources"]["limits"].get("nvidia.com/gpu", 0)))
        assert gpus[0] == 0 and max(gpus) >= 1, f"{doc['metadata']['name']}: CPU head, GPU workers"
    assert "FROM rayproject/ray:" in dockerfile


def value_at(cfg, key: str):
    """The value of a dotted config key (``run.storage_path``)."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", [d["metadata"]["name"] for d in all_docs("RayJob")])
def test_rayjob_runs_a_job_script_with_a_valid_config(name):
    from resulic.cli.submit import KINDS, job_config
    from resulic.services.storage import STORAGE_PLACEHOLDER, storage_from_environment

    (doc,) = [d for d in all_docs("RayJob") if d["metadata"]["name"] == name]
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and (REPO / argv[1]).is_file(), argv
    kind = next(k for k, v in KINDS.items() if v.script == argv[1])
    config = argv[argv.index("--config") + 1]
    assert (REPO / config).is_file()
    cfg = job_config(kind, str(REPO / config), [])  # validates with the job's own schema
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    service = [d for d in all_docs("Service") if d["metadata"]["name"] == "resulic-mlflow"][0]
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    # The config in the image leaves the bucket to the job's environment, which the manifest sets.
    key = KINDS[kind].storage_key
    assert value_at(cfg, key) == STORAGE_PLACEHOLDER, f"{config}: {key} names a bucket inside the image"
    assert value_at(storage_from_environment(cfg, key, config, environ=env["env_vars"]), key).startswith("s3://")


def mlflow_server_argv() -> list[str]:
    """The ``mlflow server`` command line of deploy/k8s/mlflow.yaml's container."""
    (deployment,) = [d for d in all_docs("Deployment") if d["metadata"]["name"] == "resulic-mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["bash", "-c"]
    argv = shlex.split(container["args"][0])
    assert argv[:3] == ["exec", "mlflow", "server"], argv
    return argv[3:]


def tracking_hosts() -> set[str]:
    """The Host headers MLflow clients in the manifests send: each MLFLOW_TRACKING_URI's host:port."""
    from urllib.parse import urlsplit

    uris = []
    for doc in all_docs("RayJob"):
        uris.append(yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["env_vars"]["MLFLOW_TRACKING_URI"])
    for doc in all_docs("RayService"):
        for _, spec in pod_specs(doc):
            uris += [e["value"] for c in spec["containers"] for e in c.get("env", []) if e["name"] == "MLFLOW_TRACKING_URI"]
    (service,) = [d for d in all_docs("Service") if d["metadata"]["name"] == "resulic-mlflow"]
    uris.append(f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}")
    return {urlsplit(uri).netloc for uri in uris}


def test_mlflow_manifest_allows_the_host_the_ray_pods_send():
    """MLflow 3 answers 403 "Invalid Host header" to a Host outside its allowed list (default:
    localhost and private IPs), and pods reach the server by its Service name. Checked with the
    installed MLflow: its `mlflow server` has every option the manifest passes, and its own host
    matcher accepts every tracking URI's host and refuses a foreign one."""
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header

    argv = mlflow_server_argv()
    options = {opt for param in server.params for opt in param.opts}
    assert {a for a in argv if a.startswith("--")} <= options, "an option the installed `mlflow server` does not have"
    assert "--allowed-hosts" in argv, "deploy/k8s/mlflow.yaml: no --allowed-hosts; MLflow 3 refuses Host: resulic-mlflow:5000"
    allowed = [h.strip() for h in argv[argv.index("--allowed-hosts") + 1].split(",")]
    hosts = tracking_hosts()
    assert "resulic-mlflow:5000" in hosts
    for host in hosts:
        assert is_allowed_host_header(allowed, host), f"MLflow would refuse Host: {host} (allowed: {allowed})"
    for foreign in ("attacker.example:5000", "resulic-mlflow.attacker.example:5000"):
        assert not is_allowed_host_header(allowed, foreign), f"the list lets {foreign} through: the guard is off"


def serve_deploy_schema():
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema


def check_import_path(import_path: str, where: str) -> None:
    module, _, attr = import_path.partition(":") if ":" in import_path else import_path.rpartition(".")
    path = REPO / (module.replace(".", "/") + ".py")
    if module.split(".")[0] == "serve" and not path.is_file():
        pytest.skip(f"{where}: {path.relative_to(REPO)} is not in this branch yet (the Serve app's issue adds it)")
    assert path.is_file(), f"{where}: import path {import_path}: no {path.relative_to(REPO)}"
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    assert attr in names, f"{where}: {path.relative_to(REPO)} defines no top-level {attr!r}"


def rayservice_serve_config() -> dict:
    (doc,) = all_docs("RayService")
    return yaml.safe_load(doc["spec"]["serveConfigV2"])


def test_rayservice_serve_config_is_a_valid_serve_config():
    config = rayservice_serve_config()
    serve_deploy_schema().model_validate(config)  # Ray Serve's own config-file schema
    assert [app["import_path"] for app in config["applications"]]


def test_rayservice_names_an_import_path_that_exists():
    for app in rayservice_serve_config()["applications"]:
        check_import_path(app["import_path"], "deploy/k8s/rayservice.yaml")


def test_rayservice_embeds_serve_config_cluster_yaml():
    source = REPO / "serve" / "config.cluster.yaml"
    if not source.is_file():
        pytest.skip("serve/config.cluster.yaml is not in this branch yet (the Serve app's issue adds it)")
    expected = yaml.safe_load(source.read_text())
    assert expected["http_options"]["host"] == "127.0.0.1"  # `serve deploy` on a machine: loopback
    expected["http_options"]["host"] = "0.0.0.0"  # in a pod: KubeRay's serve Service targets the pod IP
    assert rayservice_serve_config() == expected, (
        "deploy/k8s/rayservice.yaml's serveConfigV2 differs from serve/config.cluster.yaml: "
        "run python deploy/k8s/sync_serve_config.py"
    )


def test_every_ray_container_in_the_manifests_runs_with_token_auth():
    """Each Ray head, worker and RayJob submitter reads the token from the resulic-ray-auth Secret,
    with RAY_AUTH_MODE=token (without it Ray 2.60 starts a head whose job API runs anyone's code)."""
    secret = {"secretKeyRef": {"name": "resulic-ray-auth", "key": "auth_token"}}
    seen = 0
    for name, docs in manifests().items():
        for doc in docs:
            if doc.get("kind") not in ("RayJob", "RayService"):
                continue
            spec = doc["spec"]
            cluster = spec.get("rayClusterSpec") or spec["rayClusterConfig"]
            pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
            if doc["kind"] == "RayJob":
                pods.append(spec["submitterPodTemplate"])
            for pod in pods:
                for container in pod["spec"]["containers"]:
                    env = {e["name"]: e for e in container.get("env", [])}
                    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", (name, container["name"])
                    assert env.get("RAY_AUTH_TOKEN", {}).get("valueFrom") == secret, (name, container["name"])
                    seen += 1
    assert seen >= 8  # 2 RayJobs x (head, worker, submitter) + the RayService's head and worker
    assert "kubectl create secret generic resulic-ray-auth" in (K8S / "base.yaml").read_text()


@pytest.mark.parametrize("name", ["config.local.yaml", "config.cluster.yaml", "config.cluster-cpu.yaml"])
def test_serve_config_files_are_valid_and_name_existing_code(name):
    path = REPO / "serve" / name
    if not path.is_file():
        pytest.skip(f"serve/{name} is not in this branch yet (the Serve app's issue adds it)")
    config = yaml.safe_load(path.read_text())
    serve_deploy_schema().model_validate(config)
    for app in config["applications"]:
        check_import_path(app["import_path"], f"serve/{name}")
        for value in json.dumps(app.get("args", {})).split('"'):
            if value.startswith("configs/"):
                assert (REPO / value).is_file(), f"serve/{name}: {value} does not exist"


def test_sync_script_rewrites_only_the_serve_config_block(tmp_path):
    sys.path.insert(0, str(K8S))
    try:
        import sync_serve_config as sync
    finally:
        sys.path.pop(0)
    manifest = (K8S / "rayservice.yaml").read_text()
    serve_text = "# comment\nproxy_location: EveryNode\napplications:\n  - name: a\n    import_path: serve.app:app\n"
    new = sync.synced(manifest, serve_text)
    (doc,) = [d for d in yaml.safe_load_all(new) if d]
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == yaml.safe_load(serve_text)
    old_doc = [d for d in yaml.safe_load_all(manifest) if d][0]
    assert doc["spec"]["rayClusterConfig"] == old_doc["spec"]["rayClusterConfig"]
    assert sync.synced(new, serve_text) == new


# -- job submission --------------------------------------------------------------------------------
def documented_submissions() -> list[tuple[str, str]]:
    """(wrapper command, the ray job submit command it prints) pairs from docs/cluster.md."""
    lines = (REPO / "docs" / "cluster.md").read_text().splitlines()
    pairs = []
    for i, line in enumerate(lines):
        if line.startswith("$ python jobs/submit.py "):
            assert lines[i + 1].startswith("ray job submit "), f"docs/cluster.md:{i + 2}: the printed command follows"
            pairs.append((line[2:], lines[i + 1]))
    return pairs


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("RAY_ADDRESS", "RESULIC_TRACKING_URI", "RESULIC_STORAGE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)


def test_docs_show_every_job_kind():
    kinds = {shlex.split(wrapper)[2] for wrapper, _ in documented_submissions()}
    assert kinds == {"train", "sweep", "evaluate", "promote"}


@pytest.mark.parametrize("wrapper,shown", documented_submissions())
def test_wrapper_builds_the_command_the_docs_show(wrapper, shown, clean_env, capsys):
    sys.path.insert(0, str(REPO))
    try:
        from jobs import submit
    finally:
        sys.path.pop(0)
    argv = shlex.split(wrapper)[2:]
    assert submit.main(argv) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == shown, f"docs/cluster.md is stale; `{wrapper}` now prints:\n{printed}"
    assert shlex.split(printed)[shlex.split(printed).index("--") + 1 :][:2] == ["python", f"jobs/{argv[0]}.py"]


BUCKET_STORAGE = "s3://my-bucket/resulic/ray_results"


def test_submission_ids_are_deterministic_and_change_with_the_config(clean_env):
    base = JobRequest("train", "configs/train/stage1-sd21.yaml", storage=BUCKET_STORAGE)
    same = JobRequest("train", "configs/train/stage1-sd21.yaml", address="http://elsewhere:8265", storage=BUCKET_STORAGE)
    assert submission_id(base) == submission_id(same)
    assert submission_id(base).startswith("resulic-train-stage1-sd21-r300-")
    changed = JobRequest("train", "configs/train/stage1-sd21.yaml", ["optim.steps=10"], storage=BUCKET_STORAGE)
    assert submission_id(changed) != submission_id(base)
    elsewhere = JobRequest("train", "configs/train/stage1-sd21.yaml", storage="s3://other-bucket/ray_results")
    assert submission_id(elsewhere) != submission_id(base)
    assert submission_id(JobRequest("train", base.config, attempt=2, storage=BUCKET_STORAGE)) == submission_id(base) + "-a2"


# -- the bucket: configuration where the job runs, not in the image -----------------------------------
CLUSTER_CONFIGS = [("train", "configs/train/stage1-sd21.yaml"), ("train", "configs/train/stage2-sd21.yaml"),
                   ("sweep", "configs/sweep/sd21.yaml")]


@pytest.mark.parametrize("kind,config", CLUSTER_CONFIGS)
def test_cluster_configs_name_no_bucket(kind, config):
    from resulic.cli.submit import KINDS, job_config
    from resulic.services.storage import STORAGE_PLACEHOLDER

    assert "s3://" not in "".join(l.split("#")[0] for l in (REPO / config).read_text().splitlines()), config
    assert value_at(job_config(kind, config, []), KINDS[kind].storage_key) == STORAGE_PLACEHOLDER


def test_a_train_job_takes_its_storage_from_the_environment_or_names_the_key(clean_env, monkeypatch, capsys):
    from resulic.cli import commands
    from resulic.config import load_config
    from resulic.services.storage import storage_from_environment
    from resulic.train.config import TrainConfig

    cfg = load_config(TrainConfig, "configs/train/stage1-sd21.yaml")
    resolved = storage_from_environment(cfg, "run.storage_path", "x", environ={"RESULIC_STORAGE_PATH": "s3://b/runs"})
    assert resolved.run.storage_path == "s3://b/runs" and resolved.run.name == cfg.run.name
    assert cfg.run.storage_path == "${RESULIC_STORAGE_PATH}", "the loaded config is left as it was"
    assert storage_from_environment(resolved, "run.storage_path", "x", environ={}) is resolved, "a set path is kept"

    # jobs/train.py (`resulic train`) with the variable unset: one line naming the key, before any Ray.
    assert commands.main(["train", "--config", "configs/train/stage1-sd21.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("resulic: error: configs/train/stage1-sd21.yaml: run.storage_path: ${RESULIC_STORAGE_PATH}")
    assert "RESULIC_STORAGE_PATH is not set" in err and "--set run.storage_path=" in err


def test_a_sweep_takes_its_storage_from_the_environment_or_names_the_key(clean_env, monkeypatch):
    from resulic.tune.sweep import Sweep

    with pytest.raises(ConfigError, match=r"configs/sweep/sd21.yaml: storage_path: .*RESULIC_STORAGE_PATH is not set"):
        Sweep.load("configs/sweep/sd21.yaml")
    monkeypatch.setenv("RESULIC_STORAGE_PATH", "s3://b/sweeps")
    assert Sweep.load("configs/sweep/sd21.yaml").config.storage_path == "s3://b/sweeps"
    assert Sweep.load("configs/sweep/sd21.yaml", ["storage_path=/shared/x"]).config.storage_path == "/shared/x"


def test_submit_needs_the_storage_a_cluster_config_leaves_open(clean_env, capsys):
    sys.path.insert(0, str(REPO))
    try:
        from jobs import submit
    finally:
        sys.path.pop(0)
    assert submit.main(["train", "configs/train/stage1-sd21.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run.storage_path" in err and "--storage <location>" in err
    assert "ray job submit" not in err


def test_environment_and_storage_reach_the_job(clean_env, monkeypatch):
    monkeypatch.setenv("RESULIC_TRACKING_URI", "http://10.0.0.5:5000")
    monkeypatch.setenv("RESULIC_STORAGE_PATH", "s3://other-bucket/ray_results")
    argv = build_command(request_from_env("sweep", "configs/sweep/sd21.yaml"))
    env = json.loads(argv[argv.index("--runtime-env-json") + 1])
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://10.0.0.5:5000"
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1" and env["py_modules"] == ["platform/resulic"]
    assert argv[-2:] == ["--set", "storage_path=s3://other-bucket/ray_results"]
    with pytest.raises(ConfigError, match="no storage path"):
        build_command(JobRequest("promote", "configs/promote/sd21.yaml", storage="s3://x"))


def packed_files(root: Path, excludes: list[str]) -> set[str]:
    """The files Ray packs for a local folder of a runtime env, by Ray's own traversal (the
    folder's .gitignore files and ``excludes``, matched relative to ``root``): paths under root."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    files: set[str] = set()

    def keep(path: Path) -> None:
        if path.is_file():
            files.add(path.relative_to(root).as_posix())

    _dir_travel(root, [_get_excludes(root, excludes)], keep, include_gitignore=True)
    return files


def test_the_bundled_weights_travel_once_per_job(clean_env):
    """The working folder and the ``platform/resulic`` py_module both carried the library, so
    every job uploaded the bundled weights (64 MB) twice: each file is in exactly one upload."""
    from ray._private.ray_constants import get_runtime_env_default_excludes

    from resulic.cli.submit import runtime_env

    env = runtime_env(JobRequest("train", "configs/train/stage1.yaml"))
    argv = build_command(JobRequest("train", "configs/train/stage1.yaml"))
    assert argv[argv.index("--working-dir") + 1] == "."
    # What `ray job submit` uploads: the working folder (Ray's default excludes + ours), then each
    # py_module with the same `excludes`, matched relative to the module's folder.
    uploads = {".": packed_files(REPO, get_runtime_env_default_excludes() + env["excludes"])}
    for module in env["py_modules"]:
        uploads[module] = {f"{module}/{path}" for path in packed_files(REPO / module, env["excludes"])}
    weights = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "platform/resulic/weights").rglob("*") if p.is_file())
    assert any(w.endswith(".safetensors") for w in weights)
    for path in weights:
        carriers = [name for name, files in uploads.items() if path in files]
        assert carriers == ["platform/resulic"], f"{path} is uploaded by {carriers or 'none'} (working folder: '.')"
    assert "jobs/train.py" in uploads["."] and "configs/train/stage1.yaml" in uploads["."]
    assert "platform/resulic/cli/submit.py" in uploads["platform/resulic"]
    # Ray's dashboard refuses a request body over DASHBOARD_CLIENT_MAX_SIZE (100 MiB) with a 413:
    # the py_module, weights and all, must stay under it (a release that kept a second copy of
    # the 28 MB default pushed it to 121 MB and no job could be submitted). Zip barely shrinks
    # float16 weights, so the files' own size is the measure, with a margin for the next release.
    from ray._private.ray_constants import DASHBOARD_CLIENT_MAX_SIZE

    size = sum((REPO / path).stat().st_size for path in uploads["platform/resulic"])
    assert size < 0.97 * DASHBOARD_CLIENT_MAX_SIZE, (
        f"platform/resulic uploads {size / 2**20:.1f} MiB with every job; Ray refuses more than "
        f"{DASHBOARD_CLIENT_MAX_SIZE / 2**20:.0f} MiB (ship fewer or smaller codec folders)")


def submit_main():
    sys.path.insert(0, str(REPO))
    try:
        from jobs import submit
    finally:
        sys.path.pop(0)
    return submit.main


def test_submit_refuses_a_dataset_the_nodes_cannot_read(clean_env, capsys):
    """The small profile reads data/photos/manifest.jsonl, built on this machine and git-ignored:
    never uploaded, so a submitted job could only fail on the nodes. Refused on the laptop, unless
    the source is a URI, under the clusters' shared mount, or under a mount named --shared-path."""
    main = submit_main()
    assert main(["train", "configs/train/stage1-small.yaml", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "ray job submit" not in out and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: configs/train/stage1-small.yaml: data.source: data/photos/manifest.jsonl ")
    assert "cannot read it" in err and "/shared/datasets/photos" in err and "--shared-path DIR" in err
    assert main(["sweep", "configs/sweep/small.yaml", "--dry-run"]) == 2  # each stage of a sweep too
    assert capsys.readouterr().err.startswith("error: configs/train/stage1-small.yaml: data.source: data/photos/")
    for where in (["--set", "data.source=s3://a-bucket/photos/manifest.jsonl"],
                  ["--set", "data.source=/shared/datasets/photos/manifest.jsonl"],
                  ["--shared-path", str(REPO / "data")]):
        assert main(["train", "configs/train/stage1-small.yaml", *where, "--dry-run"]) == 0, where
        assert capsys.readouterr().out.startswith("ray job submit ")


def test_a_dataset_in_the_working_folder_travels_unless_left_behind(tmp_path):
    from resulic.cli.submit import check_reachable

    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode:
        pytest.skip("no git here")
    (tmp_path / ".gitignore").write_text("/data\n")
    for name in ("data/photos/manifest.jsonl", "datasets/tiny/manifest.jsonl", "outputs/manifest.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")

    def check(source: str) -> None:
        request = JobRequest("train", str(REPO / "configs/train/stage1.yaml"), [f"data.source={source}"])
        check_reachable(request, workdir=tmp_path)

    check("datasets/tiny/manifest.jsonl")  # committed or not, not ignored: uploaded with the folder
    check(str(tmp_path / "datasets/tiny/manifest.jsonl"))
    check("samples")
    with pytest.raises(ConfigError, match=r"data.source: data/photos/manifest.jsonl is git-ignored"):
        check("data/photos/manifest.jsonl")
    with pytest.raises(ConfigError, match=r"data.source: data/photos/manifest.jsonl is git-ignored"):
        check(str(tmp_path / "data/photos/manifest.jsonl"))  # as a sweep's stages hold it
    with pytest.raises(ConfigError, match=r"outputs/manifest.jsonl is git-ignored \(or excluded\)"):
        check("outputs/manifest.jsonl")  # one of the job's EXCLUDES
    with pytest.raises(ConfigError, match=r"/srv/photos/manifest.jsonl is a path on this machine under no shared mount"):
        check("/srv/photos/manifest.jsonl")


def test_init_from_and_backbone_folders_must_be_readable_on_the_nodes(tmp_path):
    from resulic.cli.submit import check_reachable

    def check(*overrides: str) -> None:
        request = JobRequest("train", str(REPO / "configs/train/stage1.yaml"), ["data.source=samples", *overrides])
        check_reachable(request, workdir=tmp_path)

    check("init_from=stage1-tiny")  # a run name: resolved under the storage path on the cluster
    check("init_from=shipped:variable")
    check("init_from=/shared/ray_results/stage1/model", "model.backbone.source=/shared/models/sd21-base")
    check("model.backbone.source=stabilityai/stable-diffusion-2-1-base")  # a hub id, from the nodes' cache
    with pytest.raises(ConfigError, match=r"init_from: /srv/runs/model is a path on this machine under no shared mount"):
        check("init_from=/srv/runs/model")
    with pytest.raises(ConfigError, match=r"model.backbone.source: /home/me/sd21 is a path on this machine .*"
                                          r"under /shared, or an s3:// URI"):
        check("model.backbone.source=/home/me/sd21")


def test_a_bad_config_fails_before_submitting(clean_env, capsys):
    assert submit_main()(["train", "configs/train/stage1-sd21.yaml", "--set", "optim.stepz=3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "optim.stepz: unknown key" in err and "ray job submit" not in err


# -- a submitted job's driver --------------------------------------------------------------------
def test_a_submitted_jobs_driver_leaves_the_jobs_runtime_env_alone(monkeypatch):
    """Inside a job, ``ray.init`` gets no runtime env of its own: Ray refuses one that repeats a
    job variable (every submitted job died at start), and a merged one let Ray delete the job's
    working folder under its driver. Outside a job, the driver's variables go to its workers."""
    from ray.runtime_env.runtime_env import _merge_runtime_env

    from resulic.services import cluster
    from resulic.cli.submit import runtime_env

    job_env = runtime_env(JobRequest("train", str(REPO / "configs/train/stage1.yaml"), tracking_uri="http://mlflow:5000"))
    for key in ("MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE", "OMP_NUM_THREADS"):
        monkeypatch.setenv(key, job_env["env_vars"].get(key, "1"))
    outside = cluster.driver_runtime_env()
    assert {"MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE", "OMP_NUM_THREADS"} <= set(outside["env_vars"])
    assert _merge_runtime_env(job_env, outside) is None, "Ray's merge refuses the repeated variables"
    monkeypatch.setenv(cluster.JOB_CONFIG_ENV, json.dumps({"runtime_env": job_env, "metadata": {}}))
    assert cluster.driver_runtime_env() is None
    assert _merge_runtime_env(job_env, cluster.driver_runtime_env()) == job_env


def test_submit_sends_the_ray_token_when_one_exists(tmp_path):
    from resulic.cli.submit import submit_environment

    token = tmp_path / "token"
    assert "RAY_AUTH_MODE" not in submit_environment({"RAY_AUTH_TOKEN_PATH": str(token), "HOME": str(tmp_path)})
    token.write_text("secret\n")
    assert submit_environment({"RAY_AUTH_TOKEN_PATH": str(token)})["RAY_AUTH_MODE"] == "token"
    assert submit_environment({"RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_MODE": "disabled"})["RAY_AUTH_MODE"] == "disabled"


def test_the_job_report_names_status_logs_and_mlflow_runs():
    from resulic.cli.submit import MLFLOW_RUN_LINE, JobReport

    logs = "run stage1: MLflow run 0123456789abcdef0123456789abcdef; trained codec /x\nMLflow parent run " + "f" * 32
    report = JobReport("resulic-train-x-1", "SUCCEEDED", "", MLFLOW_RUN_LINE.findall(logs))
    lines = report.lines("http://127.0.0.1:8265", "sqlite:////tmp/m.db")
    assert lines[0] == "job resulic-train-x-1: SUCCEEDED"
    assert lines[1].startswith("logs: ray job logs resulic-train-x-1 --address http://127.0.0.1:8265")
    assert lines[2:] == ["MLflow run 0123456789abcdef0123456789abcdef in sqlite:////tmp/m.db: 0123456789abcdef0123456789abcdef",
                         f"MLflow run {'f' * 32} in sqlite:////tmp/m.db: {'f' * 32}"]


@pytest.mark.parametrize("name", ["config.local.yaml", "config.cluster.yaml", "config.cluster-cpu.yaml"])
def test_serve_config_files_give_the_app_arguments_it_accepts(name):
    """The application's own argument schema (what serve.app:build validates at deploy time)."""
    from resulic.serving.catalog import ServeAppConfig

    path = REPO / "serve" / name
    if not path.is_file():
        pytest.skip(f"serve/{name} is not in this branch")
    for app in yaml.safe_load(path.read_text())["applications"]:
        ServeAppConfig.model_validate(app.get("args", {}))


def test_the_cpu_cluster_config_asks_for_no_gpu():
    config = yaml.safe_load((REPO / "serve" / "config.cluster-cpu.yaml").read_text())
    app = config["applications"][0]
    assert app["args"]["device"] == "cpu" and app["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert all(d.get("ray_actor_options", {}).get("num_gpus", 0) == 0 for d in app["deployments"])
