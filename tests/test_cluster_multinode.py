"""The cluster path, run for real: every job kind submitted with ``jobs/submit.py --wait`` to a
two-node Ray on 127.0.0.1 that the platform did not start (conftest's ``multinode``), MLflow as a
tracking server reached only over HTTP, the Serve app deployed with ``serve deploy`` the way a
RayService does, answering over HTTP.

Slow (≈ 3 minutes on 2 quiet cores: two Ray nodes, an MLflow server, four submitted jobs): marked
``cluster``; ``make test`` runs it, ``make test-quick`` (``-m "not cluster"``) skips it.
The faults (a lost node, a killed replica, a killed sweep driver, a stopped tracking server) are
drilled by benchmarks/cluster_faults.py, with the numbers in docs/cluster.md.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[1]
RUN_LINE = re.compile(r"^MLflow run ([0-9a-f]{32}) in (\S+?):? ", re.MULTILINE)


def _succeeded(proc: subprocess.CompletedProcess) -> list[str]:
    """The MLflow run ids jobs/submit.py reported for a job that must have succeeded."""
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert re.search(r"^job resulic-\S+: SUCCEEDED$", proc.stdout, re.MULTILINE), tail
    assert re.search(r"^logs: ray job logs resulic-\S+ --address http://", proc.stdout, re.MULTILINE), tail
    return [run for run, _ in RUN_LINE.findall(proc.stdout)]


def _client(multinode):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=multinode.tracking_uri)


def test_the_job_api_refuses_a_submission_without_the_token(multinode):
    """Token auth is on where the platform starts Ray (issue 26): without it a Ray head runs any
    code anyone who reaches its dashboard submits."""
    from resulic.services.local_cluster import auth_headers

    body = json.dumps({"entrypoint": "echo unauthenticated", "submission_id": "no-token"}).encode()
    request = urllib.request.Request(f"{multinode.address}/api/jobs/", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code in (401, 403), refused.value
    listed = urllib.request.Request(f"{multinode.address}/api/jobs/", headers=auth_headers())
    with urllib.request.urlopen(listed, timeout=30) as answer:  # with the token: answered, and no such job
        assert all(job.get("submission_id") != "no-token" for job in json.loads(answer.read()))


def test_training_runs_on_two_nodes_tracks_over_http_and_publishes_a_loadable_model(multinode, photo):
    proc = multinode.submit("train", "configs/train/stage1.yaml", "optim.steps=4", "run.checkpoint_every=2",
                            "workers.placement_strategy=SPREAD", "run.name=two-nodes", storage=True)
    runs = _succeeded(proc)
    assert len(runs) == 1, proc.stdout

    # The two workers ran on different nodes: the head and the node that joined.
    node_ids = {n["id"] for n in multinode.cluster.alive_nodes()}
    assert len(node_ids) == 2
    assert multinode.cluster.actor_nodes("RayTrainWorker") == node_ids

    # MLflow over HTTP: the run finished, its step history is 1..4 once each, the codec is an artifact.
    client = _client(multinode)
    run = client.get_run(runs[0])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0], "loss")]
    assert steps == [1, 2, 3, 4]
    assert "codec/manifest.json" in {f.path for f in client.list_artifacts(runs[0], "codec")}
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"

    # The final model, on the storage both nodes share, loads and round-trips a photo.
    from resulic.codec.store import load_codec

    codec = load_codec(multinode.shared / "ray_results" / "two-nodes" / "model")
    small = photo.crop((0, 0, 128, 128))
    assert codec.decode(codec.encode(small).data).image.size == small.size


def test_sweep_promote_evaluate_then_serve_the_champion(multinode, photo, tmp_path):
    # A sweep submitted as a job: two Optuna trials, MLflow parent run + children, over HTTP.
    # Both trials at once (their start-ups overlap), each worker cropping its own rows: Ray Data
    # on this cluster is the training test's above, and the sweep is about Tune, MLflow and promotion.
    trial_overrides = yaml.safe_load(Path(REPO / "configs/sweep/tiny-cluster.yaml").read_text())["trial_overrides"]
    runs = _succeeded(multinode.submit("sweep", "configs/sweep/tiny-cluster.yaml", "search.max_concurrent=2",
                                       f"trial_overrides=[{', '.join([*trial_overrides, 'data.loader=worker'])}]",
                                       storage=True))
    client = _client(multinode)
    parent = client.get_run(runs[0])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{runs[0]}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)

    # Promotion, a job: the best trial becomes models:/resulic-cluster@champion in the server's registry.
    proc = multinode.submit("promote", "configs/promote/tiny.yaml", "sweep=sweep-tiny-cluster",
                            "model_name=resulic-cluster")
    _succeeded(proc)
    champion = client.get_model_version_by_alias("resulic-cluster", "champion")
    assert champion.source.startswith("mlflow-artifacts:")

    # Evaluation of the champion, a job, fetching it through the registry; its results on shared
    # storage. It needs only the champion, as Serve below does: it runs while Serve starts.
    out = multinode.shared / "evaluate"
    evaluating = multinode.start_submit("evaluate", "configs/evaluate.yaml", "models=[models:/resulic-cluster@champion]",
                                        "max_images=1", "crop=128", "metrics.names=[psnr]", f"output_dir={out}",
                                        "track=true")

    # Serve, deployed to the running cluster the way a RayService does, answers over HTTP.
    from resulic.services.local_cluster import running_replicas, serve_config

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(serve_config(REPO / "serve" / "config.cluster.yaml", "models:/resulic-cluster@champion",
                                                  multinode.tracking_uri, multinode.cluster.ports.serve_http)))
    deploy = subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", str(config),
                             "--address", multinode.address], env=multinode.cluster.env, capture_output=True,
                            text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    url = f"http://127.0.0.1:{multinode.cluster.ports.serve_http}"
    _wait_healthy(url, timeout=600)  # the ingress answers once one codec replica runs
    deadline = time.monotonic() + 600
    while running_replicas(multinode.address, "resulic-codec", "CodecDeployment") < 2:
        assert time.monotonic() < deadline, "the second codec replica never started"
        time.sleep(0.5)
    from resulic.cli.client import CodecClient

    buf = io.BytesIO()
    photo.crop((0, 0, 128, 128)).save(buf, format="PNG")
    remote = CodecClient(url)
    result = remote.compress(buf.getvalue())
    assert result.data and str(champion.version) in result.model_version
    assert remote.decompress(result.data).data[:8] == b"\x89PNG\r\n\x1a\n"

    evaluation = _succeeded(evaluating.finish(timeout=1500))
    results = json.loads((out / "results.json").read_text())
    assert len(results["results"]["bpp"]) == 1 and results["results"]["psnr-rgb"][0] > 5
    assert client.get_run(evaluation[0]).info.status == "FINISHED"


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s ({last})")


def test_every_listener_of_the_cluster_is_on_the_loopback(multinode):
    """Issue 26: `ray start` binds the GCS and raylets to every interface and its agents to the
    machine's address; the local cluster preloads resulic.services.loopback's library, so none
    of its processes — nodes, agents, workers and Serve replicas left by the tests above, the
    tracking server — listens anywhere but on 127.0.0.1."""
    from resulic.services.loopback import is_loopback, listeners

    if not multinode.cluster.loopback_only:
        pytest.skip(multinode.cluster.loopback_unavailable)
    found = listeners(multinode.cluster.pids() | multinode.server.pids())
    ports = {port for _, port, _, _ in found}
    assert {multinode.cluster.ports.gcs, multinode.cluster.ports.dashboard, multinode.cluster.ports.mlflow} <= ports, found
    assert {"gcs_server", "raylet"} <= {name for _, _, name, _ in found}, found
    exposed = [row for row in found if not is_loopback(row[0])]
    assert not exposed, exposed
