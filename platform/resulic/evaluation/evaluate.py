"""RD evaluation of trained codecs over an image folder, through real files, on Ray.

For every rate point (a trained-codec folder, a ``models:/`` registry URI, a model YAML, or
``tiny`` for the embedded profile; a variable-rate model at each of ``levels``) each image is
compressed to a ``.rslc`` file, that file is read back and decoded, the decoded PNG is written,
and the metrics compare it (8-bit, as a user sees it) with the original. Images are spread over
Ray actors (each loads the codec and the metric networks once); FID/KID are computed in the
driver from every image's patch features.

Outputs in ``output_dir``: ``<rate point>/<image>.rslc|.png``, ``per_image/<image>.json``, the
aggregate ``results.json`` (CompressAI's format plus our keys) and ``rd-<metric>.png``. With
tracking on, the same files go to an MLflow run.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from ..config import RATE_LEVELS, StrictModel
from ..errors import ConfigError, ResulicError
from ..metrics.suite import DEFAULT as DEFAULT_METRICS
from ..metrics.weights import MetricWeights
from .results import mean_or_none, write_results

TIMING_KEYS = ("encoding_time", "decoding_time")


class MetricsConfig(StrictModel):
    names: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    weights_dir: str | None = Field(None, description="folder with the LPIPS/DISTS/FID backbone files")
    random_backbones: bool = Field(False, description="seeded random backbones; values get the '-random' suffix")


class EvaluateConfig(StrictModel):
    """``jobs/evaluate.py`` / ``resulic evaluate``."""

    name: str = "ResULIC"
    description: str = ""
    models: list[str] = Field(default_factory=lambda: ["tiny"],
                              description="rate points: codec folders, models:/ URIs, model YAMLs or 'tiny'")
    levels: list[int] = Field(default_factory=list,
                              description=f"a variable-rate model's rate levels (0..{RATE_LEVELS}), each its own "
                                          "rate point; empty: its default level. Fixed-rate models are evaluated once")
    images: str = Field("samples", description="an image folder, or 'samples' for scikit-image's photos")
    dataset: str = ""
    max_images: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=16, description="center-crop each image to at most crop x crop")
    max_side: int | None = Field(None, ge=16, description="downscale larger images first")
    output_dir: str = "outputs/evaluate"
    device: str = "cpu"
    num_workers: int = Field(1, ge=0, description="Ray actors; 0 runs in this process without Ray")
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    compare_with: list[str] = Field(default_factory=list, description="other results JSONs to draw in the RD plots")
    track: bool = Field(False, description="log to MLflow (also on when MLFLOW_TRACKING_URI is set)")
    experiment: str = "resulic-evaluate"

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, levels: list[int]) -> list[int]:
        bad = [lv for lv in levels if not 0 <= lv <= RATE_LEVELS]
        if bad:
            raise ValueError(f"{bad}: rate levels are 0..{RATE_LEVELS}")
        return sorted(set(levels))

    def resolution_policy(self) -> str:
        parts = []
        if self.max_side:
            parts.append(f"downscale to max side {self.max_side}")
        if self.crop:
            parts.append(f"center crop {self.crop}x{self.crop}")
        return ", ".join(parts) or "native (the codec pads to 128 px and crops back)"


# -- inputs -------------------------------------------------------------------------------------

def load_images(images: str, max_images: int | None = None, crop: int | None = None, max_side: int | None = None):
    """(stem, RGB image) pairs of a folder (or the sample photos), downscaled and center-cropped."""
    from ..images import list_images, open_image, sample_images, shrink_to

    if images == "samples":
        items = sample_images(max_images)
    else:
        if not Path(images).is_dir():
            raise ResulicError(f"{images}: no such image folder")
        paths = list_images(images)
        if not paths:
            raise ResulicError(f"{images}: no images in the folder")
        items = [(p.stem, open_image(p)) for p in paths[:max_images]]
    out = []
    for stem, img in items:
        if max_side:
            img = shrink_to(img, max_side)
        if crop:
            w, h = img.size
            cw, ch = min(w, crop), min(h, crop)
            left, top = (w - cw) // 2, (h - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        out.append((stem, img))
    return out


def resolve_model_sources(models: list[str], fetch_dir: Path) -> list[str]:
    """Registry URIs are downloaded once, here; everything else is passed on as it is."""
    from ..services.registry import fetch_codec, is_registry_uri

    local = []
    for i, src in enumerate(models):
        if is_registry_uri(src):
            local.append(str(fetch_codec(src, fetch_dir / f"model{i}")))
        elif src == "tiny" or Path(src).exists():
            local.append(src)
        else:
            raise ConfigError(f"models[{i}]: {src}: neither a codec folder, a model YAML, a models:/ URI nor 'tiny'")
    return local


# -- the work on one image (runs inside a Ray actor, or in-process) -----------------------------

class Evaluator:
    """Holds the metric networks and the current codec; evaluates one image at a time."""

    def __init__(self, metrics: dict, device: str = "cpu"):
        from ..services.runtime import configure_threads, quiet_libraries

        quiet_libraries()
        configure_threads()
        from ..metrics.suite import MetricSuite

        mc = MetricsConfig(**metrics)
        self.suite = MetricSuite(mc.names, MetricWeights(mc.weights_dir, mc.random_backbones), device)
        self.device = device
        self.codec = None

    def load(self, source: str) -> dict:
        from ..codec.resolve import resolve_codec

        self.codec = resolve_codec(source, device=self.device)
        return {"source": source, "fingerprint": self.codec.fingerprint.hex(),
                "rate_point": self.codec.config.rate_point.name, "profile": self.codec.config.backbone.profile,
                "variable": self.codec.config.rate_point.variable is not None}

    def run(self, stem: str, image, out_dir: str, level: int | None = None) -> dict:
        from ..images import save_image_atomic, write_atomic

        enc = self.codec.encode(image, level=level)
        path = Path(out_dir) / f"{stem}.rslc"
        write_atomic(path, enc.data)
        dec = self.codec.decode(path.read_bytes())  # decode the file as written
        save_image_atomic(dec.image, Path(out_dir) / f"{stem}.png")
        scores = self.suite(image, dec.image)
        pixels = enc.width * enc.height
        row = {"image": stem, "width": enc.width, "height": enc.height, "file_bytes": len(enc.data),
               "bpp": len(enc.data) * 8 / pixels, "latent_bpp": enc.latent_bytes * 8 / pixels,
               "text_bpp": enc.text_bytes * 8 / pixels, "estimated_bpp": enc.estimated_bpp,
               "encoding_time": enc.seconds, "decoding_time": dec.seconds, **scores.scores}
        return {"row": row, "real": scores.real_features, "fake": scores.fake_features}


# -- the driver -------------------------------------------------------------------------------

@dataclass
class Evaluation:
    results: dict  # the aggregate JSON
    per_image: dict[str, dict]
    output_dir: Path
    plots: list[Path]
    seconds: float  # wall time of the image work (model loading excluded)
    images: int
    mlflow_run_id: str | None = None  # when tracking is on


def _start_ray(cfg: EvaluateConfig):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from ..services.runtime import library_log_level

    if ray.is_initialized():
        return ray, False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # an existing cluster
    else:
        cpus = min(os.cpu_count() or 1, max(1, int(round(cfg.num_workers * cfg.cpus_per_worker))))
        # address "local": a Ray of its own, never another one found running on the machine.
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=library_log_level())  # "Started a local Ray instance" only with --verbose
    from ..services.runtime import restore_stop_handlers

    restore_stop_handlers()  # ray.init replaced SIGTERM's handler with one that aborts
    return ray, True


@contextmanager
def _user_errors(ray):
    """A ResulicError raised inside a worker reaches the caller as itself (a one-line message)."""
    try:
        yield
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        cause = getattr(exc, "cause", None) or getattr(getattr(exc, "error", None), "cause", None)
        if isinstance(cause, ResulicError):
            raise cause from None
        raise


def evaluate(cfg: EvaluateConfig, progress: bool = True) -> Evaluation:
    from tqdm import tqdm

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = load_images(cfg.images, cfg.max_images, cfg.crop, cfg.max_side)
    sources = resolve_model_sources(cfg.models, out / ".models")
    metrics = cfg.metrics.model_dump()
    total = len(items) * len(sources)

    if cfg.levels:  # from the configs alone, before any worker starts
        from ..codec.resolve import source_config

        if all(source_config(s).rate_point.variable is None for s in sources):
            raise ConfigError("levels: none of the models is a variable-rate model (they have no rate levels)")

    weights = MetricWeights(cfg.metrics.weights_dir, cfg.metrics.random_backbones)
    if not weights.random_backbones:  # a missing backbone file stops here, before any worker starts
        for name in cfg.metrics.names:
            if name in ("lpips", "dists", "fid", "kid"):
                weights.locate(name)

    ray = None
    started = False
    if cfg.num_workers == 0:
        workers = [Evaluator(metrics, cfg.device)]
    else:
        ray, started = _start_ray(cfg)
        Actor = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker)(Evaluator)
        workers = [Actor.remote(metrics, cfg.device) for _ in range(cfg.num_workers)]

    rate_points, rows, feats = [], [], []
    seconds = 0.0
    try:
        bar = tqdm(total=total, desc="evaluate", unit="img", disable=not progress, file=sys.stderr)
        for i, source in enumerate(sources):
            if ray is None:
                info = workers[0].load(source)
            else:
                with _user_errors(ray):
                    info = ray.get([w.load.remote(source) for w in workers])[0]
            levels = cfg.levels if info["variable"] and cfg.levels else [None]
            if len(levels) > 1:
                bar.total += len(items) * (len(levels) - 1)
                bar.refresh()
            for level in levels:
                rp_dir = out / f"rp{len(rate_points)}"
                t0 = time.perf_counter()
                done = _run_all(ray, workers, items, str(rp_dir), level, bar)
                seconds += time.perf_counter() - t0
                done.sort(key=lambda r: r["row"]["image"])
                rate_points.append({**info, "label": rp_dir.name, "model": cfg.models[i], "level": level})
                rows.append([r["row"] for r in done])
                feats.append(([r["real"] for r in done], [r["fake"] for r in done]))
        bar.close()
    finally:
        from ..services.runtime import stopping

        if ray is not None and not stopping():  # Ctrl-C in the command: it exits now, Ray with it
            for w in workers:  # free the metric networks even when the cluster outlives this call
                ray.kill(w)
        if started:
            ray.shutdown()

    results, per_image = aggregate(cfg, rate_points, rows, feats, weights)
    write_results(out / "results.json", results)
    for stem, data in per_image.items():
        write_results(out / "per_image" / f"{stem}.json", data)
    from .plots import plot_all

    plots = plot_all([out / "results.json", *cfg.compare_with], out)
    evaluation = Evaluation(results, per_image, out, plots, seconds, len(items))
    if tracking_enabled(cfg.track):
        evaluation.mlflow_run_id = log_to_mlflow(cfg, evaluation)
    return evaluation


def _run_all(ray, workers, items, out_dir: str, level: int | None, bar) -> list[dict]:
    """Every image at one rate point, in this process or spread over the actors."""
    if ray is None:
        done = []
        for stem, img in items:
            done.append(workers[0].run(stem, img, out_dir, level))
            bar.update(1)
        return done
    from ray.util import ActorPool

    done = []
    with _user_errors(ray):
        pool = ActorPool(workers)
        for r in pool.map_unordered(lambda w, it: w.run.remote(it[0], it[1], out_dir, level), items):
            done.append(r)
            bar.update(1)
    return done


def aggregate(cfg, rate_points, rows, feats, weights: MetricWeights):
    """Mean over images per rate point, rate points sorted by bpp; FID/KID from all patches."""
    from ..metrics.fid import fid_kid
    import numpy as np

    set_level = []
    for real, fake in feats:
        real_all = [r for r in real if r is not None and len(r)]
        entry = {}
        if real_all and any(n in ("fid", "kid") for n in cfg.metrics.names):
            r = fid_kid(np.concatenate(real_all), np.concatenate([f for f in fake if f is not None and len(f)])) \
                if sum(len(x) for x in real_all) >= 2 else None
            if "fid" in cfg.metrics.names:
                entry[weights.key("fid")] = r["fid"] if r else None
            if "kid" in cfg.metrics.names:
                entry[weights.key("kid")] = r["kid"] if r else None
            entry["fid_patches"] = sum(len(x) for x in real_all)
        set_level.append(entry)

    order = sorted(range(len(rows)), key=lambda i: mean_or_none(r["bpp"] for r in rows[i]) or 0.0)
    skip = {"image", "width", "height", "file_bytes"}
    keys = [k for k in rows[0][0] if k not in skip] if rows and rows[0] else []
    front = ["bpp", "psnr-rgb", "ms-ssim-rgb"]
    keys = [k for k in front if k in keys] + [k for k in keys if k not in front and k not in TIMING_KEYS]
    set_keys = [k for k in (set_level[0] if set_level else {}) if k != "fid_patches"]
    results = {k: [mean_or_none(r[k] for r in rows[i]) for i in order] for k in keys}
    for k in set_keys:
        results[k] = [set_level[i].get(k) for i in order]
    for k in TIMING_KEYS:
        results[k] = [mean_or_none(r[k] for r in rows[i]) for i in order]
    random = [k for k in results if k.endswith("-random")]
    common = {
        "dataset": cfg.dataset or cfg.images,
        "resolution_policy": cfg.resolution_policy(),
        "rate_points": [rate_points[i] for i in order],
        "random_backbone": bool(random),
        "random_backbone_metrics": random,
    }
    aggregate_json = {"name": cfg.name, "description": cfg.description or
                      "ResULIC real-file evaluation: bpp from the written .rslc files (header included), "
                      "metrics on the decoded 8-bit images, means over images",
                      "num_images": len(rows[0]) if rows else 0,
                      "fid_patches": [set_level[i].get("fid_patches") for i in order], **common,
                      "results": results}
    per_image = {}
    stems = [r["image"] for r in rows[0]] if rows else []
    for j, stem in enumerate(stems):
        per_rows = [rows[i][j] for i in order]
        per_image[stem] = {"source": stem, "name": cfg.name, "description": f"{cfg.name} on {stem}", **common,
                           "width": per_rows[0]["width"], "height": per_rows[0]["height"],
                           "file_bytes": [r["file_bytes"] for r in per_rows],
                           "results": {k: [r.get(k) for r in per_rows] for k in [*keys, *TIMING_KEYS]}}
    return aggregate_json, per_image


# -- MLflow -----------------------------------------------------------------------------------

def tracking_enabled(track: bool) -> bool:
    return track or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def log_to_mlflow(cfg: EvaluateConfig, ev: Evaluation) -> str:
    """One run: the config as params, each metric per rate point (step = rate point index, sorted
    by bpp), the JSONs and the RD plots as artifacts. Returns the run id."""
    import mlflow

    from ..services import tracking

    # Created like every platform experiment (artifact root, training kind), not by mlflow.set_experiment.
    experiment_id = tracking.ensure_experiment(tracking.client(mlflow.get_tracking_uri()), cfg.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate-{cfg.name}",
                          nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"resulic.kind": "evaluate", "dataset": ev.results.get("dataset", ""),
                         "random_backbone": str(ev.results.get("random_backbone"))})
        mlflow.log_params({"models": ",".join(cfg.models)[:500], "images": cfg.images, "num_images": ev.images,
                           "resolution_policy": cfg.resolution_policy(), "metrics": ",".join(cfg.metrics.names),
                           "num_workers": cfg.num_workers})
        for key, values in ev.results["results"].items():
            for step, v in enumerate(values):
                if v is not None:
                    mlflow.log_metric(key.replace("@", "_"), float(v), step=step)
        mlflow.log_artifact(str(ev.output_dir / "results.json"))
        mlflow.log_artifacts(str(ev.output_dir / "per_image"), artifact_path="per_image")
        for p in ev.plots:
            mlflow.log_artifact(str(p), artifact_path="plots")
        return run.info.run_id
