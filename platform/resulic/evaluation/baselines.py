"""Classical codecs at target bit rates, in the same results JSON as the learned codec.

Each codec has one integer (or continuous) rate knob; for every image and every target bpp the
knob is bisected to the highest-quality setting whose real file (container included) stays at or
under the target. When even the lowest-rate setting is above the target, that setting is used
and its real bpp is reported: the JSON holds measured bpp, never the target. The targets are kept
beside the results as ``target_bpp``.

| codec | how | knob | container counted |
|---|---|---|---|
| jpeg | Pillow | quality 1–95 | JFIF |
| webp | Pillow (method 6) | quality 0–100 | RIFF |
| avif | Pillow (libavif) | quality 0–100 | HEIF/AVIF (300–500 B) |
| jpeg2000 | Pillow/OpenJPEG, irreversible 9/7, mct=1 | compression ratio (continuous) | J2K codestream |
| vvc | ffmpeg from the imageio-ffmpeg wheel, libvvenc intra, 10-bit 4:2:0 | qp 63–0 | raw .266 Annex-B |

A codec that is not available here is skipped with a message (see :func:`available`).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, features

from pydantic import Field

from ..config import StrictModel
from ..errors import ConfigError, ResulicError

CODECS = ("jpeg", "webp", "avif", "jpeg2000", "vvc")
# libvvenc's 'faster' preset: about 9x faster than 'slower' per encode (0.6 s against 5.7 s on a
# 256x256 crop, 2-core CPU); its rate cost is measured in docs/evaluation.md.
VVC_PRESET = "faster"
NAMES = {"jpeg": "JPEG (Pillow)", "webp": "WebP (Pillow)", "avif": "AVIF (Pillow/libavif)",
         "jpeg2000": "JPEG 2000 (Pillow/OpenJPEG, mct=1)", "vvc": "VVC intra (libvvenc)"}


@dataclass
class Encoded:
    data: bytes
    image: Image.Image  # decoded, 8-bit RGB
    knob: float
    encode_s: float
    decode_s: float


# -- codecs: knob -> real bytes -> decoded image ------------------------------------------------

def _pillow(fmt: str, knob_arg: str, **options) -> Callable[[Image.Image, float], Encoded]:
    def run(img: Image.Image, knob: float) -> Encoded:
        t0 = time.perf_counter()
        buf = io.BytesIO()
        img.save(buf, format=fmt, **{knob_arg: int(knob)}, **options)
        t1 = time.perf_counter()
        decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        return Encoded(buf.getvalue(), decoded, knob, t1 - t0, time.perf_counter() - t1)
    return run


def _jpeg2000(img: Image.Image, ratio: float) -> Encoded:
    t0 = time.perf_counter()
    buf = io.BytesIO()
    img.save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True,
             mct=1, no_jp2=True)
    t1 = time.perf_counter()
    decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return Encoded(buf.getvalue(), decoded, ratio, t1 - t0, time.perf_counter() - t1)


def ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def _has_libvvenc() -> bool:
    exe = ffmpeg_exe()
    if not exe:
        return False
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return "libvvenc" in out


def _vvc(preset: str = "faster", threads: int = 1) -> Callable[[Image.Image, float], Encoded]:
    def run(img: Image.Image, qp: float) -> Encoded:
        exe = ffmpeg_exe()
        w, h = img.size
        # 4:2:0 needs even sides: replicate the last row/column, crop after decoding.
        arr = np.asarray(img.convert("RGB"))
        arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        with tempfile.TemporaryDirectory(prefix="resulic-vvc-") as tmp:
            src, bits, out = Path(tmp, "in.png"), Path(tmp, "out.266"), Path(tmp, "out.png")
            Image.fromarray(arr).save(src)
            t0 = time.perf_counter()
            _ffmpeg([exe, "-i", str(src), "-pix_fmt", "yuv420p10le", "-c:v", "libvvenc", "-preset", preset,
                     "-qp", str(int(qp)), "-qpa", "0", "-threads", str(threads), "-frames:v", "1", "-f", "vvc", str(bits)])
            t1 = time.perf_counter()
            _ffmpeg([exe, "-i", str(bits), "-pix_fmt", "rgb24", "-frames:v", "1", str(out)])
            t2 = time.perf_counter()
            decoded = Image.open(out).convert("RGB").crop((0, 0, w, h))
            return Encoded(bits.read_bytes(), decoded, qp, t1 - t0, t2 - t1)
    return run


def _ffmpeg(cmd: list[str]) -> None:
    r = subprocess.run([cmd[0], "-hide_banner", "-loglevel", "error", "-y", *cmd[1:]], capture_output=True, text=True)
    if r.returncode != 0:
        raise ResulicError(f"ffmpeg failed ({r.returncode}): {r.stderr.strip()[-300:]}")


@dataclass
class CodecSpec:
    run: Callable[[Image.Image, float], Encoded]
    lo: float  # knob of the lowest rate
    hi: float  # knob of the highest rate
    integer: bool = True


def codec_spec(name: str, vvc_preset: str = VVC_PRESET) -> CodecSpec:
    if name == "jpeg":
        return CodecSpec(_pillow("JPEG", "quality", optimize=True), 1, 95)
    if name == "webp":
        return CodecSpec(_pillow("WEBP", "quality", method=6), 0, 100)
    if name == "avif":
        return CodecSpec(_pillow("AVIF", "quality", speed=4), 0, 100)
    if name == "jpeg2000":
        # Compression ratio 24 bits / target: a ratio of 2400 is 0.01 bpp, 12 is 2 bpp.
        return CodecSpec(_jpeg2000, 24 / 0.002, 24 / 4.0, integer=False)
    if name == "vvc":
        return CodecSpec(_vvc(vvc_preset), 63, 0)
    raise ResulicError(f"unknown baseline codec {name!r}; known: {', '.join(CODECS)}")


def available(name: str) -> str | None:
    """None when ``name`` runs here, else the reason it does not."""
    if name == "jpeg":
        return None if features.check("jpg") else "Pillow was built without libjpeg"
    if name == "webp":
        return None if features.check("webp") else "Pillow was built without libwebp"
    if name == "avif":
        return None if features.check("avif") else "Pillow was built without libavif (needs Pillow >= 11.3)"
    if name == "jpeg2000":
        return None if features.check("jpg_2000") else "Pillow was built without OpenJPEG"
    if name == "vvc":
        return None if _has_libvvenc() else "no ffmpeg with libvvenc (pip install imageio-ffmpeg)"
    return f"unknown codec {name!r}; known: {', '.join(CODECS)}"


# -- bisection ----------------------------------------------------------------------------------

def bpp_of(enc: Encoded, img: Image.Image) -> float:
    return len(enc.data) * 8 / (img.size[0] * img.size[1])


def encode_at(img: Image.Image, spec: CodecSpec, target_bpp: float, max_steps: int = 24) -> Encoded:
    """The highest-rate knob setting whose real bpp is <= target (or the lowest-rate one)."""
    lo, hi = spec.lo, spec.hi  # lo: lowest rate; the knob may rise or fall with rate
    best = spec.run(img, lo)
    if bpp_of(best, img) > target_bpp:
        return best  # cannot go that low: report what the lowest setting gives
    try:
        top = spec.run(img, hi)
    except ResulicError:  # libvvenc refuses its lowest qps on some photos ("Error submitting video frame")
        top = None
    if top is not None and bpp_of(top, img) <= target_bpp:
        return top
    for _ in range(max_steps):
        if spec.integer and abs(hi - lo) <= 1:
            break
        mid = round((lo + hi) / 2) if spec.integer else math.sqrt(lo * hi)  # ratios bisect in log
        enc = spec.run(img, mid)
        if bpp_of(enc, img) <= target_bpp:
            lo, best = mid, enc
        else:
            hi = mid
        if not spec.integer and abs(bpp_of(best, img) - target_bpp) < 1e-3 * target_bpp:
            break
    return best


@dataclass
class BaselineRow:
    image: str
    codec: str
    target_bpp: float
    bpp: float
    knob: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    extra: dict = field(default_factory=dict)


@dataclass
class CodecRun:
    """One codec's rows (per image and target, in that order) and its wall time."""

    rows: list[BaselineRow]
    seconds: float


def _encode_one(name: str, vvc_preset: str, img: Image.Image, target: float) -> Encoded:
    """One bisection in a worker process (module level: a pool pickles it by name)."""
    return encode_at(img, codec_spec(name, vvc_preset), target)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def run_baselines(images: list[tuple[str, Image.Image]], codecs: list[str], targets: list[float],
                  vvc_preset: str = VVC_PRESET, decoded_dir: str | Path | None = None,
                  extra_metrics: Callable[[Image.Image, Image.Image], dict] | None = None,
                  progress: bool = True, workers: int = 1) -> dict[str, CodecRun]:
    """Every available codec × image × target; codecs that are not installed are skipped.

    Codecs run one after the other, each with its own progress bar (its name, its own rate: a VVC
    encode costs ~100 JPEG ones, so one bar over all codecs would promise a wrong ETA); the
    bisections of one codec run in ``workers`` processes (each encoder single-threaded).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    from ..metrics.distortion import ms_ssim, psnr  # torch: here, not in the workers, which only encode

    runnable = []
    for name in codecs:
        reason = available(name)
        if reason:
            print(f"baselines: skipping {name}: {reason}", file=sys.stderr)
        else:
            runnable.append(name)
    jobs = [(stem, img, target) for stem, img in images for target in targets]
    # spawn, not fork: the parent may hold torch's threads (learned metrics), which fork can deadlock
    from ..services.runtime import ignore_interrupts_in_child

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=ignore_interrupts_in_child) if workers > 1 else None
    out: dict[str, CodecRun] = {}
    try:
        width = max((len(n) for n in runnable), default=0)
        for name in runnable:
            t0 = time.perf_counter()
            encoded: dict[int, Encoded] = {}
            with tqdm(total=len(jobs), desc=f"{name:<{width}}", unit="point", disable=not progress, file=sys.stderr) as bar:
                if pool is None:
                    for i, (_, img, target) in enumerate(jobs):
                        encoded[i] = _encode_one(name, vvc_preset, img, target)
                        bar.update(1)
                else:
                    futures = {pool.submit(_encode_one, name, vvc_preset, img, target): i for i, (_, img, target) in enumerate(jobs)}
                    for future in as_completed(futures):
                        encoded[futures[future]] = future.result()
                        bar.update(1)
            rows = []
            # Scoring has a bar of its own: with learned metrics it can take as long as the encodes.
            for i, (stem, img, target) in enumerate(tqdm(jobs, desc=f"{name:<{width}} metrics", unit="point",
                                                         disable=not progress, file=sys.stderr)):
                enc = encoded[i]
                extra = extra_metrics(img, enc.image) if extra_metrics else {}
                rows.append(BaselineRow(stem, name, target, bpp_of(enc, img), enc.knob, psnr(img, enc.image),
                                        ms_ssim(img, enc.image), enc.encode_s, enc.decode_s, extra))
                if decoded_dir is not None:
                    from ..images import save_image_atomic
                    save_image_atomic(enc.image, Path(decoded_dir, name, f"{stem}-{target:g}.png"))
            out[name] = CodecRun(rows, time.perf_counter() - t0)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the encodes in flight, not wait for them
        if pool is not None:
            for process in list((pool._processes or {}).values()):
                process.kill()
            pool.shutdown(wait=True, cancel_futures=True)  # quick now: its processes are gone
            pool = None
            import gc

            gc.collect()  # its queues' semaphores, which the exit would otherwise report as leaked
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def summary_table(results: dict[str, dict], seconds: dict[str, float]) -> str:
    """One line per codec: its points, bpp and PSNR ranges (means over images), wall time."""
    def span(values, fmt):
        values = [v for v in values if v is not None]
        return f"{min(values):{fmt}}–{max(values):{fmt}}" if values else "—"

    header = f"{'codec':<36} {'points':>6}  {'bpp':<15} {'PSNR dB':<13} {'time':>8}"
    lines = [header, "-" * len(header)]
    for codec, data in results.items():
        r = data["results"]
        lines.append(f"{data['name']:<36} {len(r['bpp']):>6}  {span(r['bpp'], '.4f'):<15} "
                     f"{span(r['psnr-rgb'], '.2f'):<13} {seconds[codec]:>7.1f}s")
    return "\n".join(lines)


def results_json(codec: str, rows: list[BaselineRow], targets: list[float], dataset: str = "") -> dict:
    """CompressAI's results format: one list entry per target, each the mean over images."""
    from .results import mean_or_none

    per_target, kept = [], []
    for t in targets:
        rs = [r for r in rows if r.target_bpp == t]
        # A target below what the codec reaches repeats the previous point (same settings on every
        # image); a curve with repeated points is neither plottable nor usable for BD-rate.
        if per_target and [r.knob for r in rs] == [r.knob for r in per_target[-1]]:
            continue
        per_target.append(rs)
        kept.append(t)
    results = {
        "bpp": [mean_or_none(r.bpp for r in rs) for rs in per_target],
        "psnr-rgb": [mean_or_none(r.psnr for r in rs) for rs in per_target],
        "ms-ssim-rgb": [mean_or_none(r.ms_ssim for r in rs) for rs in per_target],
    }
    for key in sorted({k for r in rows for k in r.extra}):
        results[key] = [mean_or_none(r.extra.get(key) for r in rs) for rs in per_target]
    results["encoding_time"] = [mean_or_none(r.encode_s for r in rs) for rs in per_target]
    results["decoding_time"] = [mean_or_none(r.decode_s for r in rs) for rs in per_target]
    return {
        "name": NAMES.get(codec, codec),
        "description": f"{NAMES.get(codec, codec)} bisected to target bpp; bpp from real bytes incl. container",
        "dataset": dataset,
        "target_bpp": kept,
        "targets_repeating_previous": [t for t in targets if t not in kept],
        "knob": [[r.knob for r in rs] for rs in per_target],
        "num_images": len({r.image for r in rows}),
        "results": results,
    }


# -- the job ----------------------------------------------------------------------------------

class BaselinesConfig(StrictModel):
    """``resulic baselines``: classical codecs over a folder at target bpps."""

    images: str = "samples"
    dataset: str = ""
    max_images: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=16)
    max_side: int | None = Field(None, ge=16)
    codecs: list[str] = Field(default_factory=lambda: list(CODECS))
    target_bpp: list[float] = Field(default_factory=lambda: [0.03, 0.05, 0.1])
    vvc_preset: str = VVC_PRESET
    workers: int = Field(1, ge=1, description="processes bisecting one codec's points at once")
    learned_metrics: list[str] = Field(default_factory=list, description="per-image lpips / dists / st-lpips too")
    weights_dir: str | None = None
    random_backbones: bool = False
    output_dir: str = "outputs/baselines"
    save_decoded: bool = False


@dataclass
class BaselinesOutcome:
    paths: list[Path]  # <codec>.json, one per codec that ran
    table: str  # summary_table's


def run_baselines_job(cfg: BaselinesConfig, progress: bool = True) -> BaselinesOutcome:
    """Write ``<codec>.json`` per available codec (and RD plots); returns their paths and a summary."""
    from .evaluate import load_images
    from .plots import plot_all
    from .results import write_results

    unknown = [c for c in cfg.codecs if c not in CODECS]
    if unknown:
        raise ConfigError(f"codecs: unknown {unknown}; known: {', '.join(CODECS)}")
    bad = [m for m in cfg.learned_metrics if m not in ("lpips", "dists", "st-lpips")]
    if bad:
        raise ConfigError(f"learned_metrics: {bad} are not per-image learned metrics (lpips, dists, st-lpips)")
    if any(t <= 0 for t in cfg.target_bpp):
        raise ConfigError("target_bpp: every target must be positive")
    images = load_images(cfg.images, cfg.max_images, cfg.crop, cfg.max_side)
    extra = None
    if cfg.learned_metrics:
        from ..metrics.perceptual import PerceptualMetrics
        from ..metrics.weights import MetricWeights

        extra = PerceptualMetrics(cfg.learned_metrics, MetricWeights(cfg.weights_dir, cfg.random_backbones))
    out = Path(cfg.output_dir)
    decoded = out / "decoded" if cfg.save_decoded else None
    runs = run_baselines(images, cfg.codecs, sorted(cfg.target_bpp), cfg.vvc_preset, decoded, extra, progress, cfg.workers)
    paths, results = [], {}
    for codec, run in runs.items():
        data = results_json(codec, run.rows, sorted(cfg.target_bpp), cfg.dataset or cfg.images)
        if codec == "vvc":
            data["vvc_preset"] = cfg.vvc_preset
        data["per_image"] = [{"image": r.image, "target_bpp": r.target_bpp, "bpp": r.bpp, "knob": r.knob,
                              "psnr-rgb": r.psnr, "ms-ssim-rgb": r.ms_ssim, "encoding_time": r.encode_s,
                              "decoding_time": r.decode_s, **r.extra} for r in run.rows]
        results[codec] = data
        paths.append(write_results(out / f"{codec}.json", data))
    plot_all(paths, out)
    return BaselinesOutcome(paths, summary_table(results, {c: r.seconds for c, r in runs.items()}))
