"""The ResULIC codec endpoint on Ray Serve: a FastAPI ingress and a codec deployment.

    serve run serve/config.local.yaml            # CPU, tiny, 127.0.0.1:8000
    serve deploy serve/config.cluster.yaml       # GPU replicas on a running cluster

``Ingress`` (CPU, cheap) reads and checks uploads (body size, image header, options, bitstream
header) and routes each request to a ``CodecDeployment`` replica with Serve's model multiplexing;
the multiplexed model id is a rate point's *pinned* id (``models:/<name>/<version>`` or a folder).
A replica loads one backbone in ``__init__`` with the default rate point, and per further model id
only the trained parts (``resulic.serving.catalog.load_rate_point``). All request logic is in
``resulic.serving``; this file is the Serve and HTTP wiring. See docs/serving.md.
"""


import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from resulic.services import cluster  # noqa: F401  (sets Ray's environment before ray is imported)

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from resulic.errors import ResulicError
from resulic.serving.http_docs import add_offline_docs, error_responses
from resulic.serving.catalog import (
    Catalog, RatePoint, ServeAppConfig, load_rate_point, rate_points_config, replica_cache_dir, resolve_rate_points,
)
from resulic.serving.handling import (
    CompressOptions, Reply, compress_reply, decompress_replies, decompress_reply, parse_compress_options,
    parse_flag, refuse_bitstream, split_multipart,
)
from resulic.serving.limits import (
    RequestError, ServeLimits, bitstream_header, check_body_size, check_header_settings, check_image_header,
    model_settings, status_for,
)

def bind_replica_grpc_to_loopback() -> bool:
    """Ray Serve 2.60 starts an inter-deployment gRPC server in every replica on ``[::]:0`` — all
    interfaces — with no option to change it (issue 25 found the Ingress and CodecDeployment
    replicas listening on ``*:port``). Where the Ray node address is the loopback (a local Ray:
    resulic.services.cluster sets it; docs/serving.md "Network surface") every caller is on this machine
    and reaches the replica at that address, so the bind is made 127.0.0.1. On a cluster node
    (another address) replicas of other nodes call it: nothing is changed. Runs in each replica
    process when Serve imports this module; returns whether it applied."""
    try:
        import ray
        from ray.serve._private import replica as replica_module

        if not ray.is_initialized() or ray.util.get_node_ip_address() not in ("127.0.0.1", "::1"):
            return False
    except Exception:  # noqa: BLE001  (another Ray version: leave Serve as it is)
        return False
    original = replica_module.add_port_to_grpc_server
    if getattr(original, "resulic_loopback", False):
        return True

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    add_port.resulic_loopback = True
    replica_module.add_port_to_grpc_server = add_port
    return True


bind_replica_grpc_to_loopback()  # at import in a replica; again in each deployment's __init__

# How many rate points (pinned model ids) one replica keeps loaded; LRU beyond (a backbone is
# shared, so each costs only a compressor and a control module). Read when Serve imports this file.
MAX_RATE_POINTS_PER_REPLICA = int(os.environ.get("RESULIC_SERVE_MAX_RATE_POINTS", "4"))
# Decompress batching (@serve.batch, per rate point): off (1) by default, because a batch changes
# CPU kernels' rounding and a file would then not always decode to the same pixels (serving.md).
DECODE_BATCH = int(os.environ.get("RESULIC_SERVE_DECODE_BATCH", "1"))
CATALOG_TTL_S = 2.0  # how stale the ingress's copy of the catalog may get

api = FastAPI(
    title="ResULIC codec",
    version="1",
    description="Ultra-low-bitrate image compression (ResULIC) over HTTP. Images go to `/v1/compress` "
    "(raw body or multipart field `image`), bitstreams to `/v1/decompress` (raw body or multipart field "
    "`bitstream`). Errors are JSON `{\"error\": message}` with a 4xx status.",
    docs_url=None,  # /docs below: Swagger UI from this service, not from a CDN (works offline)
    redoc_url=None,
)
add_offline_docs(api)

# The refusals each route documents in the OpenAPI schema (resulic.serving raises them).
UNAVAILABLE = {503: "the codec deployment is unavailable (a replica died, or its model could not be loaded)"}
COMPRESS_ERRORS = error_responses({
    400: "a malformed option, multipart body or image (unreadable, truncated, empty)",
    404: "unknown rate point (GET /v1/models lists them)",
    413: "body, image (pixels, decompression bomb) or text over the service's limits",
    415: "the upload is not an image (or a format Pillow cannot read)",
    **UNAVAILABLE,
})
DECOMPRESS_ERRORS = error_responses({
    400: "not a ResULIC bitstream, or a corrupt or truncated one; a malformed multipart body",
    413: "body over the service's limit",
    422: "the bitstream was made by a model this service does not serve",
    **UNAVAILABLE,
})


@api.exception_handler(ResulicError)
async def _refused(request: Request, exc: ResulicError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=status_for(exc))


def _options_doc() -> list[dict]:
    q = [("rate_point", "string", "rate point name (GET /v1/models); default: the service's default"),
         ("text", "string", "the original's caption: sent whole, or the source of srr's residual"),
         ("srr", "boolean", "send the semantic residual of `text` (needs text)"),
         ("pfo_iterations", "integer", "Pfo iterations (0 = off; needs srr); bounded by the service"),
         ("pfo_seconds", "number", "Pfo time budget in seconds; bounded by the service"),
         ("bpp", "number", "per-image rate control: the file closest to this many bits per pixel, at most 5% over "
                           "(a variable-rate model; X-Resulic-Level tells the level chosen)"),
         ("level", "integer", "a variable-rate model's rate level, 0 (lowest rate) .. 127"),
         ("one_pass", "boolean", "the file asks for a one-pass decode (one network evaluation)")]
    return [{"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d} for n, t, d in q]


def _body_doc(field: str, media: str) -> dict:
    return {"requestBody": {"required": True, "content": {
        media: {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": [field], "properties": {
            field: {"type": "string", "format": "binary"}}}},
    }}}


async def read_upload(request: Request, field: str, limits: ServeLimits) -> tuple[bytes, dict[str, str]]:
    """The uploaded bytes (raw body, or the multipart part ``field``) and the multipart's other
    fields; refused as soon as the body passes ``limits.max_body_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_body_size(int(declared), limits)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        check_body_size(size, limits)
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # On a worker thread: the event loop keeps answering other requests (and /healthz) while
        # a body of up to max_body_bytes is parsed.
        return await asyncio.to_thread(split_multipart, body, content_type, field)
    return body, {}


def respond(reply: Reply, media_type: str) -> Response:
    if reply.error:
        return JSONResponse({"error": reply.error}, status_code=reply.status, headers=reply.headers)
    return Response(reply.body, media_type=media_type, headers=reply.headers)


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=2,
    health_check_period_s=10,
    health_check_timeout_s=60,
    graceful_shutdown_timeout_s=120,
)
class CodecDeployment:
    """One backbone, the rate points' trained parts multiplexed over it, codec work on one thread."""

    def __init__(self, models: dict, device: str = "cpu", limits: dict | None = None) -> None:
        from resulic.services.runtime import configure_threads, quiet_libraries

        bind_replica_grpc_to_loopback()  # before Serve starts this replica's gRPC server
        quiet_libraries()
        configure_threads()
        self.device = device
        self.limits = ServeLimits.model_validate(limits or {})
        self.cache_dir = replica_cache_dir()
        self.catalog = Catalog(rate_points_config(models, "args.models"))
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="codec")  # one codec call at a time
        default = self.catalog.rate_point(None)
        first = load_rate_point(default.model_id, None, device, self.cache_dir, self.catalog.config.tracking_uri)
        self.backbone = first.backbone
        self._preloaded = {default.model_id: first}  # handed to the multiplexer on first use
        self._settings = {first.fingerprint.hex(): model_settings(first)}  # for the ingress's header checks
        self._follower: asyncio.Task | None = None

    # -- models ----------------------------------------------------------------------------------
    @serve.multiplexed(max_num_models_per_replica=MAX_RATE_POINTS_PER_REPLICA)
    async def codec_for(self, model_id: str):
        if model_id in self._preloaded:
            return self._preloaded.pop(model_id)
        if not self.catalog.allows(model_id):
            raise RequestError(f"model {model_id} is not one this service serves", 404)
        loop = asyncio.get_running_loop()
        codec = await loop.run_in_executor(self.executor, load_rate_point, model_id, self.backbone, self.device,
                                           self.cache_dir, self.catalog.config.tracking_uri)
        self._settings[codec.fingerprint.hex()] = model_settings(codec)
        return codec

    async def reconfigure(self, user_config: dict) -> None:
        """Serve's ``user_config``: a new ``RatePointsConfig`` (aliases, versions, folders). The
        new default rate point is loaded before the catalog switches to it, so requests keep
        being answered by the old version until then."""
        await self._apply(rate_points_config(user_config, "user_config"))

    async def _apply(self, config) -> None:
        current = await asyncio.to_thread(resolve_rate_points, config)
        default = current[config.default]
        if default.model_id not in self._loaded():
            await self.codec_for(default.model_id)
        self.catalog.apply(config, current)

    def _loaded(self) -> list[str]:
        wrapper = getattr(self, "__serve_multiplex_wrapper", None)  # Serve's LRU of loaded models
        return list(wrapper.models) if wrapper is not None else list(self._preloaded)

    def _follow_aliases(self) -> None:
        """Re-resolve aliases in the background, so a promotion swaps the model with no deploy."""
        if self._follower is None and self.catalog.config.follow_aliases_s:
            self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.catalog.config.follow_aliases_s or 30.0)
            try:
                await self._apply(self.catalog.config)
            except Exception as exc:  # noqa: BLE001  (registry unreachable, alias gone: keep serving)
                print(f"resulic serve: keeping the current models: {exc}")

    # -- requests --------------------------------------------------------------------------------
    async def catalog_snapshot(self) -> dict:
        self._follow_aliases()
        return {**self.catalog.as_dict(), "replica_loaded": self._loaded(), "settings": dict(self._settings)}

    async def _codec_call(self, rate_point: dict, work, *args) -> Reply:
        self._follow_aliases()
        rp = RatePoint(**rate_point)
        try:
            codec = await self.codec_for(rp.model_id)
        except ResulicError as exc:
            return Reply(status=status_for(exc), error=str(exc))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, work, codec, rp, *args)

    async def compress(self, rate_point: dict, image: bytes, options: dict) -> Reply:
        return await self._codec_call(rate_point, compress_reply, image, CompressOptions(**options), self.limits)

    async def decompress(self, rate_point: dict, data: bytes, one_pass: bool = False) -> Reply:
        # Refuse from the header on the event loop, before the file queues behind running work.
        try:
            codec = await self.codec_for(RatePoint(**rate_point).model_id)
        except ResulicError as exc:
            return Reply(status=status_for(exc), error=str(exc))
        refused = refuse_bitstream(codec, data, self.limits)
        if refused is not None:
            return refused
        if DECODE_BATCH > 1 and not one_pass:
            return await self._decompress_batch((rate_point, data))
        return await self._codec_call(rate_point, decompress_reply, data, self.limits, one_pass)

    @serve.batch(max_batch_size=max(DECODE_BATCH, 1), batch_wait_timeout_s=0.05)
    async def _decompress_batch(self, items: list[tuple[dict, bytes]]) -> list[Reply]:
        """Serve splits batches by multiplexed model id, so a batch is one rate point's files."""
        self._follow_aliases()
        rp = RatePoint(**items[0][0])
        if any(item[0]["model_id"] != rp.model_id for item in items):
            return [await self._codec_call(r, decompress_reply, d, self.limits) for r, d in items]
        try:
            codec = await self.codec_for(rp.model_id)
        except ResulicError as exc:
            return [Reply(status=status_for(exc), error=str(exc))] * len(items)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, decompress_replies, codec, rp, [d for _, d in items],
                                          self.limits)

    def check_health(self) -> None:
        if self.executor._shutdown:  # noqa: SLF001
            raise RuntimeError("the codec executor has shut down")

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: drop the downloaded versions (≈8 MB each).
        A replica that is killed instead leaves its folder to the next one (replica_cache_dir)."""
        import shutil

        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        cache_dir = getattr(self, "cache_dir", None)
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=100)
@serve.ingress(api)
class Ingress:
    """HTTP: checks every upload before a codec replica sees it, routes by rate point."""

    def __init__(self, codec: DeploymentHandle, limits: dict | None = None) -> None:
        bind_replica_grpc_to_loopback()  # before Serve starts this replica's gRPC server
        self.codec = codec
        self.limits = ServeLimits.model_validate(limits or {})
        self._catalog: Catalog | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def catalog(self, refresh: bool = False) -> Catalog:
        async with self._lock:
            if refresh or self._catalog is None or time.monotonic() - self._fetched_at > CATALOG_TTL_S:
                self._catalog = Catalog.from_snapshot(await self._remote(self.codec.catalog_snapshot))
                self._fetched_at = time.monotonic()
            return self._catalog

    async def _lookup(self, find, key):
        """A rate point from the catalog, refreshed once on a miss (it may have just changed)."""
        try:
            return find(await self.catalog(), key)
        except RequestError:
            return find(await self.catalog(refresh=True), key)

    async def _remote(self, method, *args, model_id: str | None = None):
        handle = method if model_id is None else method.options(multiplexed_model_id=model_id)
        try:
            return await handle.remote(*args)
        except ResulicError:
            raise
        except Exception as exc:  # a replica died or the deployment is unhealthy
            raise RequestError(f"the codec deployment is unavailable ({type(exc).__name__}: {exc})", 503) from None

    @api.post("/v1/compress", summary="image -> ResULIC bitstream", response_class=Response,
              openapi_extra={"parameters": _options_doc(), **_body_doc("image", "image/*")},
              responses={200: {"content": {"application/octet-stream": {}},
                               "description": "the bitstream; X-Resulic-Bpp, -Rate-Point, -Model-Version headers"},
                         **COMPRESS_ERRORS})
    async def compress(self, request: Request) -> Response:
        image, fields = await read_upload(request, "image", self.limits)
        options = parse_compress_options({**request.query_params, **fields}, self.limits)
        check_image_header(image, self.limits)
        rp = await self._lookup(Catalog.rate_point, options.rate_point)
        reply = await self._remote(self.codec.compress, asdict(rp), image, asdict(options), model_id=rp.model_id)
        return respond(reply, "application/octet-stream")

    @api.post("/v1/decompress", summary="ResULIC bitstream -> PNG", response_class=Response,
              openapi_extra={"parameters": [{"name": "one_pass", "in": "query", "required": False,
                                             "schema": {"type": "boolean"},
                                             "description": "decode with one network evaluation, whatever the "
                                                            "file asks: faster, at some cost in quality"}],
                             **_body_doc("bitstream", "application/octet-stream")},
              responses={200: {"content": {"image/png": {}}, "description": "the decoded image"}, **DECOMPRESS_ERRORS})
    async def decompress(self, request: Request) -> Response:
        data, fields = await read_upload(request, "bitstream", self.limits)
        unknown = sorted((set(request.query_params) | set(fields)) - {"one_pass"})
        if unknown:
            raise RequestError(f"unknown option(s) {unknown}; known: ['one_pass']")
        one_pass = parse_flag("one_pass", {**request.query_params, **fields}.get("one_pass", "false"))
        header = bitstream_header(data, self.limits)
        rp = await self._lookup(Catalog.for_fingerprint, header.fingerprint.hex())
        # The model's own checks too (its S, N_r, rate level), here rather than after the file has
        # queued for a replica behind running decodes.
        check_header_settings(header, (await self.catalog()).settings.get(rp.fingerprint), self.limits)
        reply = await self._remote(self.codec.decompress, asdict(rp), data, one_pass, model_id=rp.model_id)
        return respond(reply, "image/png")

    @api.get("/v1/models", summary="rate points, versions, fingerprints; what the answering replica has loaded",
             responses=error_responses(UNAVAILABLE))
    async def models(self) -> dict:
        snapshot = await self._remote(self.codec.catalog_snapshot)
        snapshot.pop("config", None)
        snapshot.pop("settings", None)
        return {**snapshot, "limits": self.limits.model_dump()}

    @api.get("/healthz", summary="the ingress answers and knows the catalog", responses=error_responses(UNAVAILABLE))
    async def healthz(self) -> dict:
        catalog = await self.catalog()
        return {"status": "ok", "default_rate_point": catalog.config.default,
                "rate_points": {rp.name: rp.version for rp in catalog.current.values()}}


def build(args: dict | None = None):
    """The application from plain args (a Serve config file's ``args``, see ServeAppConfig)."""
    from resulic.config import build_config

    cfg = build_config(ServeAppConfig, dict(args or {}), source="serve application args")
    limits = cfg.limits.model_dump()
    codec = CodecDeployment.options(**cfg.codec_options).bind(cfg.models.model_dump(mode="json"), cfg.device, limits)
    return Ingress.bind(codec, limits)
