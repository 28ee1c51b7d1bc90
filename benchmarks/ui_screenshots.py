"""Screenshots of the two web UIs a user opens, in headless Chromium, offline: the MLflow UI on a
training experiment (its runs and their metrics) and the codec service's /docs (Swagger UI served
by the service itself).

    python benchmarks/ui_screenshots.py -o outputs/screenshots                   # ./mlflow.db, tiny service
    python benchmarks/ui_screenshots.py --tracking-uri sqlite:////path/mlflow.db --experiment resulic-sweeps
    python benchmarks/ui_screenshots.py --no-serve --mlflow-port 5250
    python benchmarks/ui_screenshots.py --no-mlflow --docs-app-only                # /docs without Ray

Needs a Chromium binary (Debian: `apt-get install chromium`; or --chromium PATH). Writes
mlflow-runs.png and serve-docs.png. Each page is given --wait-s seconds of virtual time to run its
JavaScript: a page that needs the internet (a CDN) stays blank here, which is the point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else CHROMIUM_NAMES):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise SystemExit(f"error: no Chromium ({explicit or ', '.join(CHROMIUM_NAMES)}); on Debian: apt-get install chromium")


def screenshot(chromium: str, url: str, out: Path, wait_s: float, size: str = "1600,1000") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}",
           f"--virtual-time-budget={int(wait_s * 1000)}", f"--screenshot={out.resolve()}", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + wait_s)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"error: chromium could not take {url}: {done.stderr.strip()[-400:]}")
    return out


def wait_for(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {url} did not answer within {timeout_s:.0f} s")
            time.sleep(0.5)


def training_experiment(uri: str, name: str | None) -> str:
    """The id of ``name``, else of the most recently active training experiment with runs."""
    from mlflow import MlflowClient

    from resulic.services.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND

    client = MlflowClient(uri)
    if name:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise SystemExit(f"error: no experiment {name!r} in {uri}")
        return experiment.experiment_id
    candidates = [e for e in client.search_experiments() if e.tags.get(EXPERIMENT_KIND_TAG) == TRAINING_KIND
                  and client.search_runs([e.experiment_id], max_results=1)]
    if not candidates:
        raise SystemExit(f"error: no training experiment with runs in {uri} (run `make run` first)")
    return max(candidates, key=lambda e: e.last_update_time or 0).experiment_id


def mlflow_shot(chromium: str, uri: str, experiment: str | None, port: int, out: Path, wait_s: float) -> Path:
    from resulic.services.tracking import training_view_url

    experiment_id = training_experiment(uri, experiment)
    exe = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen([str(exe) if exe.is_file() else "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 600)  # minutes on a busy 2-core machine
        return screenshot(chromium, training_view_url(f"http://127.0.0.1:{port}", experiment_id), out, wait_s)
    finally:  # mlflow ui runs uvicorn as a child: stop the whole group it started
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def serve_shot(chromium: str, port: int, out: Path, wait_s: float) -> Path:
    import tempfile

    from resulic.codec import Codec
    from resulic.codec.store import save_codec
    from serve import local

    os.environ.setdefault("RESULIC_MODEL", "tiny")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_codec(Codec.build(), Path(tmp) / "tiny")
        url = local.start({"models": {"rate_points": {"default": str(folder)}, "follow_aliases_s": None},
                           "codec_options": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}}, port=port)
        try:
            return screenshot(chromium, f"{url}/docs", out, wait_s)
        finally:
            local.stop()


def docs_app_shot(chromium: str, port: int, out: Path, wait_s: float) -> Path:
    """/docs of the ingress's own FastAPI app (serve.app:api) in uvicorn, without Ray: the same
    page, assets and OpenAPI schema, with no codec behind them (for a machine too busy to start Ray)."""
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "serve.app:api", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/openapi.json", 600)
        return screenshot(chromium, f"http://127.0.0.1:{port}/docs", out, wait_s, size="1400,1000")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("outputs/screenshots"))
    p.add_argument("--tracking-uri", help="the MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--experiment", help="experiment name (default: the latest training experiment with runs)")
    p.add_argument("--mlflow-port", type=int, default=5250)
    p.add_argument("--serve-port", type=int, default=8201)
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--no-serve", action="store_true")
    p.add_argument("--docs-app-only", action="store_true",
                   help="/docs from the ingress's FastAPI app in uvicorn, without starting Ray Serve")
    p.add_argument("--chromium", help="the browser binary (default: chromium on the PATH)")
    p.add_argument("--wait-s", type=float, default=20.0, help="virtual time each page gets to render")
    args = p.parse_args(argv)

    from resulic.services import tracking
    from resulic.services.runtime import quiet_libraries

    quiet_libraries()
    chromium = find_chromium(args.chromium)
    if not args.no_mlflow:
        uri = tracking.tracking_uri(args.tracking_uri)
        print(mlflow_shot(chromium, uri, args.experiment, args.mlflow_port, args.output / "mlflow-runs.png", args.wait_s))
    if args.docs_app_only:
        print(docs_app_shot(chromium, args.serve_port, args.output / "serve-docs.png", args.wait_s))
    elif not args.no_serve:
        print(serve_shot(chromium, args.serve_port, args.output / "serve-docs.png", args.wait_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
