"""Serving benchmark: the codec endpoint on Ray Serve with 1 and 2 codec replicas against a plain
single-process FastAPI app (uvicorn) running the same codec, with and without decompress batching.

    python benchmarks/bench_serve.py [--seconds 15] [--clients 4] [--side 256] [--model FOLDER]

For each server: requests/s and p50/p95/p99 latency of POST /v1/compress and /v1/decompress
under --clients concurrent clients for --seconds each, and at one client the per-request overhead
(HTTP latency minus the codec's own time, from the X-Resulic-Seconds header) relative to the
codec's time. Batching: Serve with RESULIC_SERVE_DECODE_BATCH=4 (@serve.batch on decompress),
and in-process decode_batch of 4 files vs 4 single decodes. Model: the tiny profile (seeded random weights) unless --model.
Clients are threads in this process (urllib); every server binds to 127.0.0.1.
"""

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from resulic.services import cluster  # noqa: F401  (Ray's environment before ray)


def baseline_app(folder: str):
    """The same codec and request handling as serve/app.py in one FastAPI process."""
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import JSONResponse

    from resulic.serving.catalog import Catalog, load_rate_point, rate_points_config
    from resulic.serving.limits import ServeLimits, fingerprint_of
    from resulic.serving.handling import compress_reply, decompress_reply, parse_compress_options
    from resulic.services.runtime import configure_threads

    configure_threads()
    catalog = Catalog(rate_points_config({"rate_points": {"default": folder}}))
    rp = catalog.rate_point(None)
    codec = load_rate_point(rp.model_id)
    limits = ServeLimits()
    executor = ThreadPoolExecutor(1)
    app = FastAPI()

    def respond(reply, media):
        if reply.error:
            return JSONResponse({"error": reply.error}, status_code=reply.status)
        return Response(reply.body, media_type=media, headers=reply.headers)

    @app.post("/v1/compress")
    async def compress(request: Request):
        body = await request.body()
        options = parse_compress_options(dict(request.query_params), limits)
        loop = asyncio.get_running_loop()
        return respond(await loop.run_in_executor(executor, compress_reply, codec, rp, body, options, limits),
                       "application/octet-stream")

    @app.post("/v1/decompress")
    async def decompress(request: Request):
        body = await request.body()
        target = catalog.for_fingerprint(fingerprint_of(body, limits))
        loop = asyncio.get_running_loop()
        return respond(await loop.run_in_executor(executor, decompress_reply, codec, target, body, limits),
                       "image/png")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def run_baseline(folder: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(folder), host="127.0.0.1", port=port, log_level="warning")


def wait_healthy(url: str, timeout_s: float = 120) -> None:
    from resulic.cli.client import CodecClient, RemoteError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            CodecClient(url, timeout=10).health()
            return
        except RemoteError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def load(url: str, op: str, payload: bytes, clients: int, seconds: float) -> dict:
    from resulic.cli.client import CodecClient

    latencies, codec_s, errors = [], [], []
    stop = time.monotonic() + seconds

    def worker():
        client = CodecClient(url, timeout=300)
        call = client.compress if op == "compress" else client.decompress
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                result = call(payload)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
                continue
            latencies.append(time.perf_counter() - t)
            codec_s.append(float(result.header("Seconds", "nan")))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / elapsed,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
            "codec_p50": statistics.median(codec_s) if codec_s else float("nan")}


def measure(url: str, image: bytes, bitstream: bytes, clients: int, seconds: float) -> dict:
    out = {}
    for op, payload in (("compress", image), ("decompress", bitstream)):
        load(url, op, payload, 1, 2)  # warm up (first multiplexed routing, allocator)
        single = load(url, op, payload, 1, seconds / 2)
        loaded = load(url, op, payload, clients, seconds)
        overhead = (single["p50"] - single["codec_p50"]) / single["codec_p50"]
        out[op] = {**loaded, "single_p50": single["p50"], "codec_p50": single["codec_p50"], "overhead": overhead}
    return out


def batch_decode_speed(codec, photo, batch: int = 4, repeats: int = 3) -> dict:
    """Seconds per file of ``batch`` decodes one by one vs one ``decode_batch`` call (distinct
    files of one size), median of ``repeats``: what batching can save inside one replica."""
    from resulic.codec.batch import decode_batch

    files = [codec.encode(photo.rotate(180 * (i % 2)), text=f"photo {i}").data for i in range(batch)]
    codec.decode(files[0])  # warm up
    single, batched = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for data in files:
            codec.decode(data)
        single.append((time.perf_counter() - t) / batch)
        t = time.perf_counter()
        decode_batch(codec, files)
        batched.append((time.perf_counter() - t) / batch)
    return {"batch": batch, "single_s": statistics.median(single), "batched_s": statistics.median(batched)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="load per measurement (default 15)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients under load (default 4)")
    parser.add_argument("--side", type=int, default=256, help="longest side of the test photo (default 256)")
    parser.add_argument("--model", help="a trained-codec folder (default: the tiny profile, saved to a temp folder)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    from resulic.codec import Codec
    from resulic.codec.store import load_codec, save_codec
    from resulic.images import png_bytes, sample_images, shrink_to
    from serve import local

    folder = args.model or str(save_codec(Codec.build(), Path(tempfile.mkdtemp()) / "tiny"))
    codec = load_codec(folder)
    photo = shrink_to(sample_images(1)[0][1], args.side)
    image = png_bytes(photo)
    bitstream = codec.encode(photo).data
    print(f"photo {photo.width}x{photo.height}, bitstream {len(bitstream)} bytes; {args.clients} clients x "
          f"{args.seconds:.0f} s per measurement", file=sys.stderr)

    batching = batch_decode_speed(codec, photo)
    results = {}
    port = local.free_port()
    proc = multiprocessing.get_context("spawn").Process(target=run_baseline, args=(folder, port), daemon=True)
    proc.start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        results["FastAPI, 1 process (baseline)"] = measure(f"http://127.0.0.1:{port}", image, bitstream,
                                                           args.clients, args.seconds)
    finally:
        proc.terminate()
        proc.join()
    for replicas, batch in ((1, 1), (2, 1), (1, 4), (2, 4)):
        options = {"num_replicas": replicas, "max_ongoing_requests": max(2, batch)}
        if batch > 1:  # read by serve/app.py when a replica imports it
            options["ray_actor_options"] = {"num_cpus": 1, "runtime_env": {"env_vars": {
                "RESULIC_SERVE_DECODE_BATCH": str(batch), "OMP_NUM_THREADS": "1"}}}
        url = local.start({"models": {"rate_points": {"default": folder}, "follow_aliases_s": None},
                           "codec_options": options})
        name = f"Ray Serve, {replicas} replica(s)" + (f", decompress batch {batch}" if batch > 1 else "")
        try:
            results[name] = measure(url, image, bitstream, args.clients, args.seconds)
        finally:
            local.stop()

    print(f"\n| server | op | req/s | p50 s | p95 s | p99 s | errors | 1-client p50 s | codec s | overhead |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = results["FastAPI, 1 process (baseline)"]
    for name, ops in results.items():
        for op, r in ops.items():
            print(f"| {name} | {op} | {r['rps']:.2f} ({r['rps'] / base[op]['rps']:.2f}x) | {r['p50']:.3f} | "
                  f"{r['p95']:.3f} | {r['p99']:.3f} | {r['errors']} | {r['single_p50']:.3f} | {r['codec_p50']:.3f} | "
                  f"{100 * r['overhead']:.0f} % |")
    print(f"\nin-process decode, s/file: one by one {batching['single_s']:.3f}, decode_batch of {batching['batch']} "
          f"{batching['batched_s']:.3f} ({batching['single_s'] / batching['batched_s']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "batching": batching}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
