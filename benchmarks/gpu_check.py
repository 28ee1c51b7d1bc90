"""GPU check: what a person with one GPU runs in minutes before using a cluster.

    python benchmarks/gpu_check.py [--profile sd21-random|sd21|tiny] [--steps 3] [--no-serve]

1. train:  a few bf16 stage-1 training steps of the model (the losses of resulic.train.model,
           AdamW, gradient checkpointing for SD 2.1), random images; reports step time and
           peak GPU memory, fails on a non-finite loss.
2. decode: compress an image on the GPU, then decode the same file on the CPU and on the GPU.
           The entropy decoder must recover the same symbols on both (the cross-device problem
           CompressAI users hit: a hyper-decoder that computes slightly different scales picks
           different coding tables and the rest of the stream is garbage); the pixels may differ
           by float rounding of the diffusion decoder, within --pixel-tolerance.
3. serve:  a Ray Serve deployment holding the codec on the GPU; compress and decompress through
           its handle (skipped, with a message, when ray[serve] is not installed).

Profiles: ``sd21-random`` (default) is SD 2.1-base's real shapes with random weights (no download
needed; checks memory, speed and determinism, not picture quality); ``sd21`` loads the real
backbone from --source (a diffusers folder, e.g. /shared/models/sd21-base); ``tiny`` is the CPU
test profile. Without CUDA everything runs on the CPU and the report says so.

Parts 1 and 2 need torch, diffusers, transformers, compressai, pydantic and PyYAML, not Ray or
MLflow. Exit status: 0 when every part that ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
try:  # a checkout without `pip install -e .` (e.g. a GPU box with its own Python)
    import resulic  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "platform"))

import numpy as np
import torch

PROFILES = ("sd21-random", "sd21", "tiny")
# Per profile: training crop, the check image's size (not a multiple of the 128-px stride, so the
# padding path runs), training batch.
SIZES = {"sd21-random": (512, (320, 240), 1), "sd21": (512, (320, 240), 1), "tiny": (128, (96, 80), 1)}


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, part: str, status: str, detail: str) -> None:
        self.rows.append((part, status, detail))
        print(f"[{part}] {status}: {detail}", flush=True)

    @property
    def failed(self) -> bool:
        return any(status == "FAIL" for _, status, _ in self.rows)

    def print(self) -> None:
        print("\n== GPU check report ==")
        for part, status, detail in self.rows:
            print(f"{part:<8} {status:<5} {detail}")
        print("result:", "FAIL" if self.failed else "PASS")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__} - no CUDA device: every part runs on the CPU"


def model_config(profile: str, source: str | None):
    from resulic.config import ModelConfig, load_config

    if profile == "tiny":
        return ModelConfig()
    overrides = [f"backbone.source={source}"] if source else []
    return load_config(ModelConfig, REPO / "configs" / "model" / "sd21.yaml", overrides)


def build_backbone(profile: str, config):
    from resulic.models.backbone import build_sd21_random, load_backbone

    if profile == "sd21-random":
        return build_sd21_random(config.backbone.seed)
    return load_backbone(config.backbone)


def check_image(size: tuple[int, int]):
    """A real photo (scikit-image's samples) when available, else a smooth synthetic picture."""
    from PIL import Image

    try:
        from resulic.images import sample_images

        _, img = sample_images(1)[0]
    except Exception:
        yy, xx = np.mgrid[0:512, 0:512].astype(np.float32) / 511
        arr = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 4 * yy)], -1)
        img = Image.fromarray((arr * 255).astype(np.uint8))
    w, h = size
    return img.resize((max(w, h), max(w, h))).crop((0, 0, w, h))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- part 1 --------------------------------------------------------------------------------------
def train_steps(config, backbone, device: torch.device, steps: int, crop: int, batch: int, report: Report):
    """bf16 stage-1 steps; returns the TrainableCodec (its weights then go through part 2)."""
    from resulic.train.checkpoint import fresh_parts
    from resulic.train.config import LossConfig
    from resulic.train.model import TrainableCodec

    compressor, cdm = fresh_parts(config, backbone)
    if config.backbone.profile != "tiny":
        cdm.enable_gradient_checkpointing()
    trainable = TrainableCodec(config, backbone, compressor.to(device), cdm.to(device), 1, LossConfig(),
                               config.rate_point.lambda_rate)
    trainable.train()
    groups = trainable.parameter_groups()
    optimizers = [torch.optim.AdamW(groups["main"], lr=1e-4), torch.optim.AdamW(groups["aux"], lr=1e-3)]
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(steps):
        images = torch.rand(batch, 3, crop, crop, generator=generator).to(device)
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            terms = trainable(images, ["a photo of a lighthouse"] * batch)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        for opt in optimizers:
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(terms["loss"].detach()))
    trained = sum(p.numel() for g in groups.values() for p in g)
    memory = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
    detail = (f"{steps} bf16 step(s), batch {batch} at {crop}x{crop}, {trained / 1e6:.1f} M trained parameters; "
              f"step time first {times[0]:.2f} s, median {float(np.median(times)):.2f} s; "
              f"loss {' '.join(f'{v:.4g}' for v in losses)}{memory}")
    ok = all(math.isfinite(v) for v in losses)
    report.add("train", "ok" if ok else "FAIL", detail if ok else "non-finite loss: " + detail)
    return trainable


# -- part 2 --------------------------------------------------------------------------------------
def cross_device_decode(trainable, device: torch.device, image, tolerance: float, report: Report):
    """Compress on ``device``; decode the file there and on the CPU; compare symbols and pixels.
    Returns the device codec (for reuse) or None."""
    from resulic.codec.codec import VAE_FACTOR
    from resulic.codec.store import load_codec, save_codec
    from resulic.images import padded_size
    from resulic.train.checkpoint import snapshot_codec

    trainable.eval()
    codec = snapshot_codec(trainable, device)
    t0 = time.perf_counter()
    encoded = codec.encode(image)
    sync(device)
    encode_s = time.perf_counter() - t0
    data = encoded.data
    # The CPU decoder loads the codec the way every tool does: from its saved trained-codec folder
    # (weights and coding tables), with the same backbone, and checks the fingerprint.
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        save_codec(codec, Path(tmp) / "codec")
        cpu_codec = load_codec(Path(tmp) / "codec", backbone=copy.deepcopy(codec.backbone).to("cpu"), device="cpu")
    w, h = encoded.width, encoded.height
    ph, pw = padded_size(h, w, codec.config.stride)
    hw = (ph // VAE_FACTOR, pw // VAE_FACTOR)
    from resulic.codec.container import unpack

    latent = unpack(data).latent
    y_dev = codec.compressor.decode_symbols(latent, hw).float().cpu()
    try:
        y_cpu = cpu_codec.compressor.decode_symbols(latent, hw).float()
        symbol_gap = float((y_dev - y_cpu).abs().max())
    except Exception as exc:  # a desynchronised rANS stream can also fail outright
        symbol_gap = math.inf
        print(f"[decode] CPU entropy decode failed: {exc}", flush=True)
    symbols_match = symbol_gap < 0.5  # ŷ = symbol + mean: equal symbols differ only by the means' rounding
    t0 = time.perf_counter()
    on_device = codec.decode(data)
    sync(device)
    decode_dev_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    on_cpu = cpu_codec.decode(data) if symbols_match else None
    decode_cpu_s = time.perf_counter() - t0
    where = device.type.upper()
    head = (f"{w}x{h} image -> {len(data)} bytes ({encoded.bpp:.4f} bpp, estimated {encoded.estimated_bpp:.4f}); "
            f"encode {encode_s:.2f} s on {where}, decode {decode_dev_s:.2f} s on {where}")
    if on_cpu is None:
        report.add("decode", "FAIL", f"{head}; latent symbols differ between {where} and CPU (max |Δŷ| {symbol_gap:.3g})")
        del cpu_codec
        return codec
    a = np.asarray(on_device.image, dtype=np.int16)
    b = np.asarray(on_cpu.image, dtype=np.int16)
    diff = np.abs(a - b)
    mse = float(((a - b).astype(np.float64) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    ok = on_device.image.size == on_cpu.image.size == image.size and diff.max() <= tolerance
    report.add(
        "decode", "ok" if ok else "FAIL",
        f"{head}, {decode_cpu_s:.2f} s on CPU; latent symbols identical {where} vs CPU (max |Δŷ| {symbol_gap:.2g}); "
        f"pixels {where} vs CPU: max abs diff {int(diff.max())} (tolerance {tolerance:g}), mean {diff.mean():.3f}, "
        f"PSNR {psnr:.1f} dB",
    )
    del cpu_codec
    return codec


# -- part 3 --------------------------------------------------------------------------------------
def serve_round_trip(profile: str, source: str | None, device: torch.device, image, report: Report) -> None:
    try:
        from resulic.services import cluster  # sets Ray's environment before ray is imported
        from ray import serve
    except ImportError as exc:
        report.add("serve", "skip", f"ray[serve] is not installed ({exc}); parts 1 and 2 ran without Ray")
        return
    import io

    import ray

    num_gpus = 1 if device.type == "cuda" else 0

    @serve.deployment(ray_actor_options={"num_gpus": num_gpus, "num_cpus": 1}, max_ongoing_requests=2)
    class CodecCheck:
        """Holds the codec on the replica's device; the Serve app (serve/app.py) does the same."""

        def __init__(self, profile: str, source: str | None) -> None:
            sys.path.insert(0, str(REPO / "platform"))
            from resulic.codec import Codec

            config = model_config(profile, source)
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self.codec = Codec.build(config, build_backbone(profile, config), device=self.device)

        def compress(self, png: bytes) -> bytes:
            from PIL import Image

            return self.codec.compress(Image.open(io.BytesIO(png)).convert("RGB"))

        def decompress(self, data: bytes) -> bytes:
            buf = io.BytesIO()
            self.codec.decompress(data).save(buf, format="PNG")
            return buf.getvalue()

        def where(self) -> str:
            return self.device

    from PIL import Image

    started_ray = not ray.is_initialized()
    try:
        cluster.ensure_ray(min_cpus=2)
        t0 = time.perf_counter()
        handle = serve.run(CodecCheck.bind(profile, source), name="gpu-check", route_prefix=None)
        ready_s = time.perf_counter() - t0
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        t0 = time.perf_counter()
        data = handle.compress.remote(buf.getvalue()).result(timeout_s=600)
        png = handle.decompress.remote(data).result(timeout_s=600)
        round_trip_s = time.perf_counter() - t0
        replica_device = handle.where.remote().result(timeout_s=60)
        decoded = Image.open(io.BytesIO(png))
        ok = decoded.size == image.size and replica_device == device.type
        report.add("serve", "ok" if ok else "FAIL",
                   f"replica on {replica_device.upper()} ready in {ready_s:.1f} s; {len(data)} bytes, round trip "
                   f"{round_trip_s:.2f} s; decoded {decoded.size[0]}x{decoded.size[1]}")
    except Exception as exc:
        report.add("serve", "FAIL", f"{type(exc).__name__}: {exc}")
    finally:
        try:
            serve.shutdown()
        finally:
            if started_ray:
                ray.shutdown()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="sd21-random")
    parser.add_argument("--source", help="sd21 profile: the backbone folder (default: configs/model/sd21.yaml's)")
    parser.add_argument("--steps", type=int, default=3, help="training steps (default 3)")
    parser.add_argument("--crop", type=int, help="training crop (default 512 for SD 2.1, 128 for tiny)")
    parser.add_argument("--pixel-tolerance", type=float, default=8.0,
                        help="max abs pixel difference (0-255) allowed between the GPU and CPU decodes (default 8)")
    parser.add_argument("--no-serve", action="store_true", help="skip part 3")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    parser.add_argument("--no-tf32", action="store_true",
                        help="full fp32 convolutions and matmuls on the GPU (cuDNN uses TF32 by default), to see "
                             "how much of the GPU/CPU pixel difference it causes")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    from resulic.services.runtime import quiet_libraries

    quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    crop, image_size, batch = SIZES[args.profile]
    crop = args.crop or crop
    report = Report()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    tf32 = f"; TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}" if device.type == "cuda" else ""
    report.add("device", "info", describe_device(device) + tf32)
    t_start = time.perf_counter()
    try:
        config = model_config(args.profile, args.source)
        t0 = time.perf_counter()
        backbone = build_backbone(args.profile, config).to(device)
        report.add("model", "info", f"profile {args.profile} ({backbone.identity}), built in {time.perf_counter() - t0:.1f} s")
        trainable = train_steps(config, backbone, device, args.steps, crop, batch, report)
        image = check_image(image_size)
        cross_device_decode(trainable, device, image, args.pixel_tolerance, report)
        del trainable, backbone
        if device.type == "cuda":
            torch.cuda.empty_cache()
    except Exception as exc:
        traceback.print_exc()
        report.add("check", "FAIL", f"{type(exc).__name__}: {exc}")
        report.print()
        return 1
    if args.no_serve:
        report.add("serve", "skip", "--no-serve")
    else:
        serve_round_trip(args.profile, args.source, device, image, report)
    report.add("total", "info", f"{time.perf_counter() - t_start:.0f} s")
    report.print()
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
