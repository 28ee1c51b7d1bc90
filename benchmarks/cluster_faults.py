"""Real faults on a local multi-node Ray (resulic.services.local_cluster): a head and a second node on
127.0.0.1, an MLflow tracking server, every job submitted with jobs/submit.py. The numbers go to
docs/cluster.md ("Tried on a local multi-node cluster").

    python benchmarks/cluster_faults.py [--drills node,mlflow,sweep,serve] [--out outputs/cluster_faults.json]
    python benchmarks/cluster_faults.py --drills small_head --head-cpus 2 --nodes 1   # a 2-CPU head alone
    python benchmarks/cluster_faults.py --drills unschedulable                      # workers that fit no node

Drills:
  node    kill the second node's raylet (SIGKILL, by pid) while a 2-worker training runs, after its
          first checkpoint: the run must finish (from its last checkpoint, on what is left) with
          an MLflow step history without gap or duplicate.
  mlflow  stop the tracking server (SIGTERM, by pid) for --outage seconds during training, then
          start it again on the same database: the run finishes and no step is missing.
  sweep   SIGKILL a sweep's driver after its first trial, resubmit (--attempt 2): Tuner.restore
          resumes, and the Optuna study (the searcher's state) still holds the first trial.
  serve   serve the node drill's model with 2 codec replicas under steady load (2 clients), SIGKILL
          one replica's process: failed requests (and those one client retry would not hide), and
          the seconds until the deployment is back to 2 running replicas.

Ports: RESULIC_TEST_<NAME>_PORT as in tests/conftest.py; Ray's temp dir: --temp-dir.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "platform"), str(REPO)]

from resulic.services.local_cluster import LocalCluster, MlflowServer, Ports  # noqa: E402


class Drills:
    def __init__(self, root: Path, temp_dir: Path):
        self.root = root
        self.ports = Ports.from_env()
        self.cluster = LocalCluster(root / "nodes", self.ports, [str(REPO / "platform"), str(REPO)], temp_dir=temp_dir)
        self.server = MlflowServer(root / "mlflow", self.ports.mlflow, self.cluster.env)
        self.shared = root / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        os.environ.update({"RAY_AUTH_MODE": self.cluster.env["RAY_AUTH_MODE"]})

    # -- plumbing ---------------------------------------------------------------------------------
    def submit(self, kind: str, config: str, *overrides: str, wait: bool = False, attempt: int = 1,
               storage: str | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(REPO / "jobs/submit.py"), kind, config, "--address", self.cluster.dashboard_url,
                "--tracking-uri", self.server.uri, "--attempt", str(attempt)]
        argv += ["--storage", storage or str(self.shared / "ray_results")] if kind in ("train", "sweep") else []
        argv += ["--wait"] if wait else []
        for o in overrides:
            argv += ["--set", o]
        proc = subprocess.run(argv, cwd=REPO, env=self.cluster.env, capture_output=True, text=True, timeout=3600)
        print(proc.stdout[-1500:], proc.stderr[-1500:] if proc.returncode else "", flush=True)
        return proc

    @staticmethod
    def submission_id(proc) -> str:
        return re.search(r"^job (resulic-\S+):", proc.stdout, re.MULTILINE).group(1)

    def jobs(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.cluster.dashboard_url)

    def wait_job(self, sid: str, timeout: float = 3600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = str(getattr(self.jobs().get_job_status(sid), "value", ""))
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(3)
        return "TIMEOUT"

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.server.uri)

    def run_by_name(self, name: str):
        exp = self.mlflow().get_experiment_by_name("resulic-train")
        if exp is None:
            return None
        runs = self.mlflow().search_runs([exp.experiment_id], f"tags.`resulic.run_name` = '{name}'", max_results=1)
        return runs[0] if runs else None

    def steps(self, run_id: str, key: str = "loss") -> list[int]:
        return [m.step for m in self.mlflow().get_metric_history(run_id, key)]

    def wait_for_step(self, name: str, step: int, timeout: float = 1800) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                run = self.run_by_name(name)
                if run is not None and max(self.steps(run.info.run_id), default=0) >= step:
                    return run.info.run_id
            except Exception:  # the server may be between restarts
                pass
            time.sleep(2)
        raise TimeoutError(f"{name}: no step {step} in MLflow after {timeout:.0f} s")

    def history_check(self, run_id: str, total: int) -> dict:
        steps = self.steps(run_id)
        return {"steps_logged": len(steps), "expected": total, "missing": sorted(set(range(1, total + 1)) - set(steps)),
                "duplicates": sorted({s for s in steps if steps.count(s) > 1})}

    def job_logs(self, sid: str) -> str:
        return self.jobs().get_job_logs(sid)

    # -- drills -----------------------------------------------------------------------------------
    TRAIN = ("optim.steps=12", "run.checkpoint_every=3", "run.log_every=1", "run.max_failures=4",
             "workers.placement_strategy=SPREAD")

    def node(self) -> dict:
        name = "drill-node-loss"
        proc = self.submit("train", "configs/train/stage1.yaml", *self.TRAIN, f"run.name={name}")
        sid = self.submission_id(proc)
        run_id = self.wait_for_step(name, 3)
        killed = self.cluster.kill_raylet("node2")
        t_kill = time.monotonic()
        print(f"[node] killed node2's raylet (pid {killed}) after step 3 was tracked", flush=True)
        status = self.wait_job(sid)
        finished = time.monotonic() - t_kill
        logs = self.job_logs(sid)
        self.cluster.nodes.pop("node2", None)  # its `ray start --block` exits with its raylet
        return {"job": sid, "status": status, "seconds_kill_to_end": round(finished, 1),
                "resumed_at": re.findall(r"resuming at step (\d+)", logs),
                "nodes_alive_after": len(self.cluster.alive_nodes()), **self.history_check(run_id, 12),
                "model_published": (self.shared / "ray_results" / name / "model" / "manifest.json").is_file(),
                "mlflow_run": run_id}

    def small_head(self) -> dict:
        """A stage-1 job with one worker on a head of 2 CPUs (the driver holds one, the worker the
        other): the data path must start nothing that waits for a CPU of its own (issue 26: Ray
        Data's crop actor waited for ever, with no message). Run with ``--head-cpus 2 --nodes 1``."""
        name = "drill-small-head"
        t0 = time.monotonic()
        proc = self.submit("train", "configs/train/stage1.yaml", "optim.steps=4", "run.checkpoint_every=2",
                           "workers.num_workers=1", "data.loader=ray_data", f"run.name={name}", wait=True)
        seconds = time.monotonic() - t0
        sid = self.submission_id(proc)
        run = self.run_by_name(name)
        return {"job": sid, "status": str(getattr(self.jobs().get_job_status(sid), "value", "")),
                "seconds_submit_to_end": round(seconds, 1),
                "cpus": sum(n["resources"].get("CPU", 0) for n in self.cluster.alive_nodes()),
                **(self.history_check(run.info.run_id, 4) if run else {"mlflow_run": None}),
                "model_published": (self.shared / "ray_results" / name / "model" / "manifest.json").is_file()}

    def unschedulable(self) -> dict:
        """A job whose worker group can never be placed (2 workers of 4 CPUs on nodes of 2 to 4):
        it must fail in a bounded time with a message that says what is missing, not wait for ever."""
        name = "drill-unschedulable"
        t0 = time.monotonic()
        proc = self.submit("train", "configs/train/stage1.yaml", "optim.steps=4", "workers.num_workers=2",
                           "workers.cpus_per_worker=4", "run.max_failures=1", "run.schedule_timeout_s=120",
                           f"run.name={name}", wait=True)
        seconds = time.monotonic() - t0
        sid = self.submission_id(proc)
        logs = self.job_logs(sid)
        lines = [ln for ln in logs.splitlines() if re.search(r"Error|error|resources|timed out|Timeout", ln)]
        return {"job": sid, "status": str(getattr(self.jobs().get_job_status(sid), "value", "")),
                "seconds_submit_to_end": round(seconds, 1), "submit_rc": proc.returncode,
                "error_lines": lines[-6:], "submit_tail": (proc.stdout + proc.stderr)[-800:]}

    def mlflow_outage(self, outage: float) -> dict:
        name = "drill-mlflow-outage"
        proc = self.submit("train", "configs/train/stage1.yaml", *self.TRAIN[:-1], "workers.num_workers=1",
                           f"run.name={name}")
        sid = self.submission_id(proc)
        run_id = self.wait_for_step(name, 3)
        t0 = time.monotonic()
        self.server.stop()
        stopped = time.monotonic() - t0
        time.sleep(outage)
        t1 = time.monotonic()
        self.server.start(timeout=300)
        down = time.monotonic() - t0
        print(f"[mlflow] server down {down:.1f} s (stop {stopped:.1f} s, restart {time.monotonic() - t1:.1f} s)", flush=True)
        status = self.wait_job(sid)
        logs = self.job_logs(sid)
        return {"job": sid, "status": status, "server_down_seconds": round(down, 1),
                "worker_restarts": len(re.findall(r"resuming at step", logs)),
                "run_status": self.mlflow().get_run(run_id).info.status, **self.history_check(run_id, 12),
                "mlflow_run": run_id}

    def sweep(self) -> dict:
        storage = str(self.shared / "sweep_drill")
        overrides = ("search.num_samples=3",)
        proc = self.submit("sweep", "configs/sweep/tiny-cluster.yaml", *overrides, storage=storage)
        sid = self.submission_id(proc)
        client = self.mlflow()
        first = None
        deadline = time.monotonic() + 1800
        while first is None and time.monotonic() < deadline:
            exp = client.get_experiment_by_name("resulic-sweeps")
            if exp is not None:
                done = client.search_runs([exp.experiment_id], "tags.`resulic.sweep` = 'sweep-tiny-cluster' and "
                                          "attributes.status = 'FINISHED' and tags.stage = '1'")
                first = done[0] if done else None
            time.sleep(2)
        if first is None:
            raise TimeoutError("no finished trial")
        pid = int(self.jobs().get_job_info(sid).driver_info.pid)
        os.kill(pid, signal.SIGKILL)
        print(f"[sweep] killed the sweep driver (pid {pid}) after trial {first.data.tags.get('trial_id')}", flush=True)
        killed_status = self.wait_job(sid, 300)
        before = {k: v for k, v in first.data.params.items() if k == "loss.lambda_rate"}
        again = self.submit("sweep", "configs/sweep/tiny-cluster.yaml", *overrides, storage=storage, attempt=2, wait=True)
        logs = self.job_logs(self.submission_id(again))
        study = _optuna_trials(Path(storage) / "sweep-tiny-cluster" / "tune")
        exp = client.get_experiment_by_name("resulic-sweeps")
        children = client.search_runs([exp.experiment_id], "tags.`resulic.sweep` = 'sweep-tiny-cluster'")
        return {"first_job": sid, "first_job_status": killed_status, "resubmitted_rc": again.returncode,
                "restored": "Tuner.restore" in logs or "Restoring" in logs or "restor" in logs.lower(),
                "first_trial_params": before, "optuna_trials": study,
                "first_trial_in_study": any(abs(t["params"].get("loss.lambda_rate", -1) - float(before.get("loss.lambda_rate", -2))) < 1e-9
                                            for t in study),
                "mlflow_trial_runs": len(children), "finished_trial_runs": sum(c.info.status == "FINISHED" for c in children)}

    def serve(self, model_folder: Path, seconds: float = 60, kill_at: float = 15) -> dict:
        from resulic.services import registry
        from resulic.cli.client import CodecClient
        from resulic.services.local_cluster import serve_config

        version = registry.register_codec(model_folder, "resulic-drill", tracking_uri=self.server.uri)
        registry.set_alias("resulic-drill", "champion", version, tracking_uri=self.server.uri)
        import yaml

        cfg = serve_config(REPO / "serve/config.cluster.yaml", "models:/resulic-drill@champion", self.server.uri,
                           self.ports.serve_http, replicas=2)
        path = self.root / "serve.yaml"
        path.write_text(yaml.safe_dump(cfg))
        subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", str(path), "--address",
                        self.cluster.dashboard_url], env=self.cluster.env, check=True, timeout=300)
        url = f"http://127.0.0.1:{self.ports.serve_http}"
        _wait(lambda: _running_replicas(self.cluster.dashboard_url) == 2, 900, "2 running codec replicas")
        from resulic.images import sample_images

        buf = io.BytesIO()
        sample_images(1)[0][1].convert("RGB").crop((0, 0, 128, 128)).save(buf, format="PNG")
        png = buf.getvalue()
        client = CodecClient(url, timeout=120)
        client.compress(png)  # warm
        records: list[dict] = []
        stop = threading.Event()
        t_start = time.monotonic()

        def load():
            while not stop.is_set():
                t = time.monotonic() - t_start
                try:
                    client.compress(png)
                    records.append({"t": t, "ok": True})
                except Exception as exc:
                    retry_ok = True
                    try:
                        client.compress(png)
                    except Exception:
                        retry_ok = False
                    records.append({"t": t, "ok": False, "error": str(exc)[:120], "retry_ok": retry_ok})

        threads = [threading.Thread(target=load) for _ in range(2)]
        for th in threads:
            th.start()
        time.sleep(kill_at)
        pid = _replica_pids(self.cluster.dashboard_url)[0]
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        print(f"[serve] killed codec replica pid {pid}", flush=True)
        # First Serve's controller notices the loss (fewer than 2 running), then it is replaced.
        try:
            _wait(lambda: _running_replicas(self.cluster.dashboard_url) < 2, 60, "the lost replica in Serve's status")
            noticed = round(time.monotonic() - t_kill, 1)
        except TimeoutError:  # replaced between two polls
            noticed = None
        _wait(lambda: _running_replicas(self.cluster.dashboard_url) == 2, 900, "2 running codec replicas again")
        recovery = time.monotonic() - t_kill
        remaining = seconds - (time.monotonic() - t_start)
        if remaining > 0:
            time.sleep(remaining)
        stop.set()
        for th in threads:
            th.join()
        failed = [r for r in records if not r["ok"]]
        return {"requests": len(records), "failed": len(failed), "failed_after_one_retry": sum(not r["retry_ok"] for r in failed),
                "errors": sorted({r["error"] for r in failed})[:5], "seconds_to_two_running_replicas": round(recovery, 1),
                "seconds_until_serve_saw_the_loss": noticed,
                "killed_pid": pid, "load_seconds": seconds, "clients": 2}


def _optuna_trials(tune_path: Path) -> list[dict]:
    """The trials in the Optuna study that Tune saved with the experiment (searcher state)."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tune_path))
    return [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value}
            for t in searcher._ot_study.trials]


def _replica_pids(dashboard: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000, detail=True,
                         raise_on_missing_output=False)
    return [a.pid for a in actors if "CodecDeployment" in (a.class_name or "")]


def _running_replicas(dashboard: str) -> int:
    from resulic.services.local_cluster import running_replicas

    return running_replicas(dashboard, "resulic-codec", "CodecDeployment")


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(1)
    raise TimeoutError(f"no {what} after {timeout:.0f} s")


def listening(drills) -> dict:
    """How many sockets the cluster's processes and the tracking server listen on, and any that
    is not on the loopback (issue 26: none)."""
    from resulic.services.loopback import is_loopback, listeners

    found = listeners(drills.cluster.pids() | drills.server.pids())
    return {"count": len(found), "off_loopback": [f"{ip}:{port} {name}" for ip, port, name, _ in found if not is_loopback(ip)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drills", default="node,mlflow,sweep,serve")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the MLflow server stays down")
    parser.add_argument("--root", help="working folder (default: a new temporary one)")
    parser.add_argument("--temp-dir", default=None, help="Ray's temp dir (short: socket paths)")
    parser.add_argument("--out", default="outputs/cluster_faults.json")
    # 3 = exactly what the node drill's job asks for (its driver's 1 CPU and 2 training workers):
    # after the second node is lost, the restarted worker group must fit on the head alone, with
    # nothing spare for anything the job starts without reserving it.
    parser.add_argument("--head-cpus", type=int, default=4, help="the head node's CPUs (the second node has 2)")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=2, help="1: the head alone (the small_head drill)")
    args = parser.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="resulic-faults-"))
    temp_dir = Path(args.temp_dir or tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    drills = Drills(root, temp_dir)
    wanted = args.drills.split(",")
    results: dict = {"root": str(root), "head_cpus": args.head_cpus}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        t = time.monotonic()
        drills.cluster.start_head(cpus=args.head_cpus)
        if args.nodes == 2:
            drills.cluster.add_node("node2", cpus=2)
        drills.server.start(timeout=300)
        results["startup_seconds"] = round(time.monotonic() - t, 1)
        steps = [("small_head", drills.small_head), ("unschedulable", drills.unschedulable), ("node", drills.node), ("mlflow", lambda: drills.mlflow_outage(args.outage)), ("sweep", drills.sweep),
                 ("serve", lambda: drills.serve(drills.shared / "ray_results" / "drill-node-loss" / "model"))]
        for name, drill in steps:
            if name not in wanted:
                continue
            if name not in ("node", "small_head", "unschedulable") and "node2" not in drills.cluster.nodes:
                drills.cluster.add_node("node2", cpus=2)  # the lost node comes back (as an autoscaler would)
            t = time.monotonic()
            try:
                results[name] = drill()
            except Exception as exc:
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results[name]["drill_seconds"] = round(time.monotonic() - t, 1)
            results[name]["listeners"] = listening(drills)
            print(name, json.dumps(results[name], indent=1, default=str), flush=True)
            out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    finally:
        drills.server.stop()
        drills.cluster.stop()
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
