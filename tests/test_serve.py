"""The codec endpoint for real: Ray Serve on 127.0.0.1 (a free port), real HTTP, a registered
model in a SQLite MLflow store served as models:/resulic-serve@champion plus a folder rate point.
One application serves the whole module (starting Serve costs ~10 s on 2 cores)."""

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from resulic.cli.client import CodecClient, RemoteError
from resulic.codec import Codec
from resulic.codec.store import save_codec
from resulic.config import ModelConfig, build_config
from resulic.images import png_bytes
from resulic.services.registry import register_codec, set_alias

pytestmark = pytest.mark.slow
MODEL = "resulic-serve"
LIMITS = {"max_body_bytes": 2_000_000, "max_pixels": 1_000_000, "max_pfo_iterations": 2, "max_pfo_seconds": 5}


def variant(codec, seed: int, name: str | None = None) -> Codec:
    """Another codec on the same backbone (a different compressor seed: a different fingerprint)."""
    overrides = [f"compressor.seed={seed}"] + ([f"rate_point.name={name}"] if name else [])
    return Codec.build(build_config(ModelConfig, {}, overrides), backbone=codec.backbone)


@pytest.fixture(scope="module")
def models(codec, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{root}/mlflow.db"
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.MlflowClient(uri).create_experiment("resulic-registry", artifact_location=str(root / "artifacts"))
    assert exp
    v1 = register_codec(save_codec(codec, root / "v1"), MODEL, tracking_uri=uri)
    v2 = register_codec(save_codec(variant(codec, 7), root / "v2"), MODEL, tracking_uri=uri)
    set_alias(MODEL, "champion", v1, tracking_uri=uri)
    low = save_codec(variant(codec, 11, "r150"), root / "r150")
    yield {"uri": uri, "v1": v1, "v2": v2, "low": low, "v1_folder": root / "v1", "v2_folder": root / "v2"}
    mlflow.set_tracking_uri(None)


def app_args(models, **codec_options) -> dict:
    return {
        "models": {"rate_points": {"r300": f"models:/{MODEL}@champion", "r150": str(models["low"])},
                   "tracking_uri": models["uri"], "follow_aliases_s": 1.0},
        "limits": LIMITS,
        "codec_options": {"max_ongoing_requests": 2, "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": {
            "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5"}}}, "autoscaling_config": {
            "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 1,
            "downscale_delay_s": 600, "look_back_period_s": 2, "metrics_interval_s": 0.5}, **codec_options},
    }


@pytest.fixture(scope="module")
def url(ray_cluster, models):
    from serve import local

    yield local.start(app_args(models))
    local.stop()


@pytest.fixture(scope="module")
def client(url):
    return CodecClient(url, timeout=120)


@pytest.fixture(scope="module")
def upload(photo):
    return png_bytes(photo)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def multipart(field: str, data: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = "resulic-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_round_trip_matches_the_local_cli(client, codec, photo, upload, models, tmp_path):
    result = client.compress(upload)
    assert result.rate_point == "r300" and result.model_version == models["v1"]
    assert result.data == codec.encode(photo).data  # the same bytes as the library makes here
    assert result.bpp == pytest.approx(len(result.data) * 8 / (photo.width * photo.height), rel=1e-4)
    body, content_type = multipart("image", upload, rate_point="r300")
    assert client._request("POST", "/v1/compress", body, content_type=content_type).data == result.data

    served = client.decompress(result.data)
    assert served.headers["content-type"] == "image/png" and served.model_version == models["v1"]
    quick = client.decompress(result.data, one_pass=True)  # one network evaluation: another picture
    assert quick.data[:8] == b"\x89PNG\r\n\x1a\n" and quick.data != served.data
    (tmp_path / "x.rslc").write_bytes(result.data)
    from resulic.cli.commands import main

    assert main(["decompress", str(tmp_path / "x.rslc"), "-o", str(tmp_path / "x.png"),
                 "--model", str(models["v1_folder"])]) == 0
    assert np.array_equal(pixels(served.data), np.asarray(Image.open(tmp_path / "x.png").convert("RGB")))

    (tmp_path / "photo.png").write_bytes(upload)  # the CLI over HTTP: the same bytes again
    assert main(["remote", "compress", str(tmp_path / "photo.png"), "-o", str(tmp_path / "r.rslc"), "--url", client.url]) == 0
    assert (tmp_path / "r.rslc").read_bytes() == result.data
    assert main(["remote", "decompress", str(tmp_path / "r.rslc"), "-o", str(tmp_path / "r.png"), "--url", client.url]) == 0
    assert (tmp_path / "r.png").read_bytes() == served.data

    low = client.compress(upload, rate_point="r150")  # a second rate point, multiplexed
    assert low.rate_point == "r150" and low.data != result.data
    assert client.decompress(low.data).rate_point == "r150"
    listing = client.models()
    assert {rp["name"] for rp in listing["rate_points"]} == {"r300", "r150"}
    assert client.health()["status"] == "ok"
    assert b"ResULIC codec" in client._request("GET", "/docs").data


def test_bad_input_is_refused_and_the_service_keeps_answering(client, codec, upload, url):
    big = Image.new("RGB", (1200, 1000))  # 1.2 M pixels: over the test limit of 1 M
    foreign = variant(codec, 99).encode(Image.new("RGB", (64, 64), "gray")).data
    good = client.compress(upload).data
    cases = [
        (lambda: client.compress(b"this is not an image"), 415, "not an image"),
        (lambda: client.compress(upload[: len(upload) // 2]), 400, "truncated"),
        (lambda: client.compress(png_bytes(big)), 413, "exceeds the limit"),
        (lambda: client.compress(b"\0" * 2_100_000), 413, "over the limit"),
        (lambda: client.compress(upload, rate_point="r999"), 404, "unknown rate point"),
        (lambda: client.compress(upload, srr=True), 400, "needs the original's caption"),
        (lambda: client.compress(upload, pfo_iterations=3, srr=True, text="a cat"), 400, "pfo_iterations"),
        (lambda: client._request("POST", "/v1/compress", upload, {"colour": "red"}), 400, "unknown option"),
        (lambda: client.compress(upload, bpp=0), 400, "positive number"),
        (lambda: client.compress(upload, bpp=0.1), 400, "fixed rate"),
        (lambda: client.compress(upload, level=3), 400, "fixed rate"),
        (lambda: client._request("POST", "/v1/decompress", good, {"speed": "max"}), 400, "unknown option"),
        (lambda: client.decompress(b"garbage bytes"), 400, "not a ResULIC bitstream"),
        (lambda: client.decompress(good[:-5]), 400, ""),
        (lambda: client.decompress(foreign), 422, "does not serve"),
        (lambda: client._request("POST", "/v1/decompress", b"--x\r\n", content_type="multipart/form-data; boundary=x"),
         400, "malformed multipart/form-data body"),
    ]
    for call, status, words in cases:
        with pytest.raises(RemoteError) as refused:
            call()
        assert refused.value.status == status and words in str(refused.value), str(refused.value)
    assert client.decompress(good).data[:8] == b"\x89PNG\r\n\x1a\n"


def test_docs_and_their_assets_come_from_the_service(url):
    """/docs through Serve's proxy: Swagger UI's files from the service, nothing from a CDN."""
    import urllib.request

    page = urllib.request.urlopen(f"{url}/docs", timeout=60).read().decode()
    assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn.jsdelivr.net" not in page
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        with urllib.request.urlopen(f"{url}/docs/assets/{name}", timeout=60) as answer:
            assert answer.status == 200 and len(answer.read()) > 1000


def listening_sockets() -> list[tuple[str, int, str]]:
    """(address, port, process) of every listening socket of this process and the processes it
    started (the local Ray: GCS, raylet, dashboard and agents, workers, Serve's controller, proxy
    and replicas)."""
    import os

    import psutil

    me = psutil.Process(os.getpid())
    found = []
    for p in [me, *me.children(recursive=True)]:
        try:
            title = " ".join(p.cmdline()) or p.name()
            found += [(c.laddr.ip, c.laddr.port, title[:80]) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:  # a worker that ended while we looked
            continue
    return found


def test_every_listener_is_on_the_loopback(url, client, upload):
    """Issue 25: the Ingress and CodecDeployment replicas listened on *:port (Serve binds each
    replica's inter-deployment gRPC server to [::]); serve/app.py binds them to 127.0.0.1 when
    the Ray node address is the loopback, as it is here."""
    client.decompress(client.compress(upload).data)  # every replica has started and answered
    sockets = listening_sockets()
    replicas = {title for _, _, title in sockets if "ServeReplica" in title}
    assert any("CodecDeployment" in t for t in replicas) and any("Ingress" in t for t in replicas), sockets
    assert any(port == int(url.rsplit(":", 1)[1]) for _, port, _ in sockets)  # the proxy is among them
    off = [s for s in sockets if s[0] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not off, off


def run_load(url: str, upload: bytes, seconds: float, clients: int, on_tick=None, until=None,
             max_seconds: float = 45, versions: list | None = None) -> tuple[list, list, list]:
    """``clients`` threads alternating compress and decompress for ``seconds``, longer (up to
    ``max_seconds``) until ``until()`` holds; (ok, failures, versions). ``versions``: the list
    the model versions that answered are appended to, as they answer (for ``until``)."""
    ok, failures = [], []
    versions = [] if versions is None else versions
    start = time.monotonic()
    stop = start + seconds

    def worker() -> None:
        client = CodecClient(url, timeout=120)
        while time.monotonic() < stop:
            try:
                made = client.compress(upload)
                back = client.decompress(made.data)
                assert back.data[:4] == b"\x89PNG"
                ok.append(2)
                versions.append(made.model_version)
            except Exception as exc:  # noqa: BLE001  (every failure is reported)
                failures.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_tick:
            on_tick()
        if until is not None and not until() and time.monotonic() < start + max_seconds:
            stop = max(stop, time.monotonic() + 1)  # keep the load on until the condition holds
        time.sleep(0.25)
    return ok, failures, versions


def replicas() -> int:
    from ray import serve

    app = serve.status().applications["resulic-codec"]
    return sum(n for state, n in app.deployments["CodecDeployment"].replica_states.items() if state == "RUNNING")


def test_concurrent_load_scales_without_errors(url, upload):
    seen = []
    # The load stays on until the second replica runs: its process imports torch and diffusers
    # and loads the model, which took over 45 s on 2 cores shared with a training run and the
    # cluster tests (load average ~40); a quiet machine sees it within seconds.
    ok, failures, _ = run_load(url, upload, seconds=8, clients=8, on_tick=lambda: seen.append(replicas()),
                               until=lambda: 2 in seen, max_seconds=180)
    assert not failures, failures[:3]
    assert len(ok) >= 8
    assert max(seen) == 2, seen  # autoscaling allowed two and the load asked for them


def test_alias_swap_under_load(url, upload, client, models):
    made_by_v1 = client.compress(upload)
    assert made_by_v1.model_version == models["v1"]
    swapped = []

    def swap_once() -> None:
        if not swapped:
            set_alias(MODEL, "champion", models["v2"], tracking_uri=models["uri"])
            swapped.append(time.monotonic())

    # The load runs until the swap is seen (the alias is followed each second, the ingress's
    # catalog copy is at most 2 s old), then a little longer: at least 5 s in all.
    answered: list = []
    seen_v2: list = []

    def v2_answering() -> bool:
        if not seen_v2 and answered and answered[-1] == models["v2"]:
            seen_v2.append(time.monotonic())
        return bool(seen_v2) and time.monotonic() > seen_v2[0] + 1.5

    ok, failures, versions = run_load(url, upload, seconds=5, clients=4, on_tick=swap_once, until=v2_answering,
                                      versions=answered)
    assert not failures, failures[:3]
    assert set(versions) <= {models["v1"], models["v2"]} and versions[-1] == models["v2"], versions
    assert client.compress(upload).model_version == models["v2"]
    assert client.decompress(made_by_v1.data).model_version == models["v1"]  # older files still decode


def test_user_config_swap_under_load(url, upload, client, models):
    """Redeploying with a user_config that pins version 1 (Serve's reconfigure path) while a
    load runs: no failed request, and version 1 answers afterwards."""
    from ray import serve

    from serve.app import build

    pinned = {"rate_points": {"r300": f"models:/{MODEL}/{models['v1']}", "r150": str(models["low"])},
              "tracking_uri": models["uri"], "follow_aliases_s": None}
    deployer = threading.Thread(target=lambda: serve.run(build(app_args(models, user_config=pinned)),
                                                         name="resulic-codec", route_prefix="/", blocking=False))
    ok, failures, versions = run_load(url, upload, seconds=6, clients=4, on_tick=lambda: deployer.is_alive() or
                                      deployer.ident or deployer.start(), until=lambda: not deployer.is_alive())
    deployer.join()
    assert not failures, failures[:3]
    time.sleep(2.5)  # the ingress's catalog copy is at most 2 s old
    assert client.compress(upload).model_version == models["v1"]
