"""Hostile HTTP requests against the codec endpoint on 127.0.0.1 (issue 25), with the listeners check.

Starts the application on a local Ray (``serve/local.py``, a tiny-profile folder as its rate point),
lists every listening socket of the processes this script started (psutil), then sends seeded hostile
requests from several client threads: multipart bodies of many fields, oversized fields, repeated
parts, malformed boundaries, truncated bodies, random bytes and damaged bitstreams, oversized bodies,
good requests among them, while a prober times ``/healthz``. Every answer must be an HTTP status
below 500 with a one-line JSON error (or a good result); a connection error, a 5xx or a missing answer
within the timeout is a failure. Prints a table by request kind: count, statuses, worst and median
seconds (median, p95, worst), /healthz latency, and each replica's RSS before the attack, its peak
during it (sampled with the /healthz probes) and after it: the growth bad requests leave behind.

    python benchmarks/attack_http.py --count 1000 --clients 8
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def listening_sockets() -> list[tuple[str, int, str]]:
    import psutil

    me = psutil.Process(os.getpid())
    found = []
    for p in [me, *me.children(recursive=True)]:
        try:
            title = " ".join(p.cmdline()) or p.name()
            found += [(c.laddr.ip, c.laddr.port, title[:70]) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def form(parts: list[tuple[str, bytes]], boundary: bytes = b"b", end: bool = True) -> bytes:
    body = b"".join(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, n.encode(), v)
                    for n, v in parts)
    return body + (b"--%s--\r\n" % boundary if end else b"")


def make_request(kind: str, rng: random.Random, png: bytes, good: bytes) -> tuple[str, str, bytes, str]:
    """(method, path, body, content type) of one hostile (or good) request."""
    mp = "multipart/form-data; boundary=b"
    if kind == "many_fields":
        n = rng.choice([17, 1_000, 10_000, 50_000, 250_000])
        return "POST", "/v1/compress", form([(f"f{i}", b"v") for i in range(n)] + [("image", png)]), mp
    if kind == "big_field":
        return "POST", "/v1/compress", form([("text", b"x" * rng.choice([17_000, 1_000_000, 8_000_000])),
                                             ("image", png)]), mp
    if kind == "repeated":
        return "POST", "/v1/decompress", form([("bitstream", good), ("bitstream", good)]), mp
    if kind == "malformed_multipart":
        body = rng.choice([b"--x\r\n", b"", b"garbage", form([("image", png)], end=False),
                           b"--b\r\n" + b"A" * 10_000 + b"\r\n\r\n", form([("image", png)])[: rng.randrange(1, 200)]])
        ctype = rng.choice([mp, "multipart/form-data", "multipart/form-data; boundary=" + "x" * 300])
        return "POST", rng.choice(["/v1/compress", "/v1/decompress"]), body, ctype
    if kind == "random_bitstream":
        return "POST", "/v1/decompress", os.urandom(rng.choice([0, 1, 12, 100, 10_000, 1_000_000])), \
            "application/octet-stream"
    if kind == "damaged_bitstream":
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return "POST", "/v1/decompress", bytes(data), "application/octet-stream"
    if kind == "oversize":
        return "POST", rng.choice(["/v1/compress", "/v1/decompress"]), b"\0" * (17 * 1024 * 1024), \
            "application/octet-stream"
    if kind == "bad_options":
        opts = rng.choice(["?level=1e9", "?bpp=nan", "?pfo_iterations=-1", "?text=" + "x" * 2000, "?srr=maybe",
                           "?rate_point=" + "r" * 300, "?x=1"])
        return "POST", "/v1/compress" + opts, png, "image/png"
    if kind == "not_image":
        return "POST", "/v1/compress", os.urandom(rng.choice([0, 10, 10_000])), "image/png"
    return "POST", "/v1/decompress", good, "application/octet-stream"  # good


KINDS = ["many_fields", "big_field", "repeated", "malformed_multipart", "random_bitstream", "damaged_bitstream",
         "oversize", "bad_options", "not_image", "good"]


def send(port: int, method: str, path: str, body: bytes, ctype: str, timeout: float) -> tuple[int | str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        answer = conn.getresponse()
        return answer.status, answer.read()
    except Exception as exc:  # noqa: BLE001  (recorded as a failure)
        return f"ERR:{type(exc).__name__}", b""
    finally:
        conn.close()


def run(port: int, count: int, clients: int, seed: int, png: bytes, good: bytes, timeout: float) -> dict:
    """Send the plan from ``clients`` threads; also returns each replica's peak RSS during it."""
    rng = random.Random(seed)
    plan = [(i, KINDS[i % len(KINDS)]) for i in range(count)]
    rng.shuffle(plan)
    results, lock = [], threading.Lock()
    queue = list(plan)  # bodies are made when sent: 100 oversized bodies alone are 1.7 GB
    health, stop = [], threading.Event()
    peak_rss: dict[str, float] = {}

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, kind = queue.pop()
            method, path, body, ctype = make_request(kind, random.Random(seed * 100_003 + i), png, good)
            t0 = time.perf_counter()
            status, payload = send(port, method, path, body, ctype, timeout)
            seconds = time.perf_counter() - t0
            one_line = True
            if isinstance(status, int) and status >= 400:
                try:
                    one_line = "\n" not in json.loads(payload)["error"]
                except (ValueError, KeyError, TypeError):
                    one_line = False
            with lock:
                results.append((kind, status, seconds, one_line))

    def prober() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            status, _ = send(port, "GET", "/healthz", b"", "text/plain", timeout)
            health.append((status, time.perf_counter() - t0))
            for name, mb in replica_rss_mb().items():
                peak_rss[name] = max(peak_rss.get(name, 0.0), mb)
            stop.wait(0.5)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    probe = threading.Thread(target=prober)
    probe.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    probe.join()
    return {"results": results, "health": health, "peak_rss": peak_rss}


def table(results: list, health: list) -> str:
    lines = ["| kind | requests | statuses | median s | p95 s | worst s |", "|---|---|---|---|---|---|"]
    for kind in KINDS:
        rows = [r for r in results if r[0] == kind]
        if not rows:
            continue
        statuses = collections.Counter(str(r[1]) for r in rows)
        times = [r[2] for r in rows]
        lines.append(f"| {kind} | {len(rows)} | {', '.join(f'{s}×{n}' for s, n in sorted(statuses.items()))} | "
                     f"{statistics.median(times):.3f} | {p95(times):.2f} | {max(times):.2f} |")
    h = [t for _, t in health]
    lines.append(f"\n/healthz during the attack: {len(h)} probes, median {statistics.median(h):.3f} s, "
                 f"worst {max(h):.2f} s, statuses {dict(collections.Counter(str(s) for s, _ in health))}")
    return "\n".join(lines)


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank: with 100 values, the 95th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def is_failure(row) -> bool:
    kind, status, _, one_line = row
    return not isinstance(status, int) or status >= 500 or not one_line or (kind == "good" and status != 200)


def replica_rss_mb() -> dict[str, float]:
    import psutil

    out = {}
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(p.cmdline())
            if "ServeReplica" in title:
                name = title.split(":")[-1].strip()
                out[name] = max(out.get(name, 0.0), p.memory_info().rss / 2**20)
        except psutil.Error:
            continue
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    # A local Ray on a busy machine misses heartbeats; these keep it alive (no effect on the checks).
    os.environ.setdefault("RAY_health_check_failure_threshold", "60")
    os.environ.setdefault("RAY_health_check_timeout_ms", "30000")
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from PIL import Image

    from resulic.codec import Codec
    from resulic.codec.store import save_codec
    from resulic.images import png_bytes
    from serve import local

    codec = Codec.build()
    folder = save_codec(codec, Path(tempfile.mkdtemp(prefix="attack-http-")) / "tiny")
    png = png_bytes(Image.new("RGB", (64, 48), (120, 30, 200)))
    good = codec.encode(Image.new("RGB", (64, 48), (120, 30, 200))).data
    t0 = time.perf_counter()
    url = local.start({"models": {"rate_points": {"default": str(folder)}, "follow_aliases_s": None}})
    print(f"serving at {url} after {time.perf_counter() - t0:.0f} s", flush=True)
    try:
        sockets = listening_sockets()
        off = [s for s in sockets if s[0] not in LOOPBACK]
        print(f"{len(sockets)} listening sockets of the processes started here; off the loopback: {off}")
        port = int(url.rsplit(":", 1)[1])
        rss_before = replica_rss_mb()
        t0 = time.perf_counter()
        out = run(port, args.count, args.clients, args.seed, png, good, args.timeout)
        print(f"{len(out['results'])} requests, {args.clients} clients, {time.perf_counter() - t0:.0f} s")
        print(table(out["results"], out["health"]))
        rss_after = replica_rss_mb()
        print("| replica | RSS before MB | peak during MB | after MB |\n|---|---|---|---|")
        for name in sorted(set(rss_before) | set(rss_after)):
            print(f"| {name} | {rss_before.get(name, 0):.0f} | {out['peak_rss'].get(name, 0):.0f} | "
                  f"{rss_after.get(name, 0):.0f} |")
        failures = [r for r in out["results"] if is_failure(r)]
        print(f"{len(failures)} failures: {failures[:10]}")
        after = listening_sockets()
        off += [s for s in after if s[0] not in LOOPBACK]
        return 1 if failures or off else 0
    finally:
        local.stop()
        import ray

        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
