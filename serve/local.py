"""Serving the codec on this machine from Python (tests, benchmarks, the main job): a local Ray
(``resulic.services.cluster.ensure_ray``), Serve's HTTP proxy on 127.0.0.1, the application from
``serve.app.build``."""

import socket
import time

from resulic.services import cluster


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_logging() -> dict:
    """Serve's logs on the console: warnings and errors, no line per request (its access log),
    unless verbose (``resulic --verbose``); the same for Serve itself and the application."""
    from resulic.services.runtime import verbose

    return {"log_level": "INFO" if verbose() else "WARNING", "enable_access_log": verbose()}


def start(args: dict, port: int | None = None, host: str = "127.0.0.1", name: str = "resulic-codec",
          timeout_s: float = 300.0) -> str:
    """Deploy the codec application and wait until it answers; returns its base URL."""
    from ray import serve

    from resulic.cli.client import CodecClient, RemoteError
    from resulic.services.runtime import quiet_libraries

    quiet_libraries()  # after importing ray.serve, which sets its logger to INFO

    from .app import build

    cluster.ensure_ray(min_cpus=2)
    port = port or free_port(host)
    logging_config = serve_logging()
    serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
    port = serve.context._get_global_client().http_config.port  # a running Serve keeps its own port
    serve.run(build(args), name=name, route_prefix="/", blocking=False, logging_config=logging_config)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            CodecClient(url, timeout=30).health()
            return url
        except RemoteError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop() -> None:
    from ray import serve

    serve.shutdown()
