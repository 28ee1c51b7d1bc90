"""Codec benchmark: encode/decode time, container overhead, network evaluations, peak memory.

    python benchmarks/bench_codec.py [--images 6] [--repeats 3] [--model PATH]

Images: ../shared/datasets/kodak when present (768x512 photos), else scikit-image's samples.
Times are medians of --repeats runs. The baseline decoder, run in the same process, is the
official sampler loop (S+1 network calls, the t = N output and the final identity step
included); ours skips the two calls whose output is unused. Peak memory is the resident set of
a fresh process that loads the model and decodes one 768x512 image.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "datasets" / "kodak"


@torch.no_grad()
def official_loop_sample(schedule, denoise, z_c, noise, num_steps, generator=None):
    """The official sampler loop: the network is evaluated at every one of the S+1 grid points,
    including t = N (output discarded: x0 is z_c there) and the final identity step at t = 0."""
    schedule.set_timesteps(num_steps, device=z_c.device)
    x = schedule.start(z_c, noise)
    grid = schedule.timesteps.tolist()
    for i, t in enumerate(grid):
        eps = denoise(x, t)
        if i + 1 < len(grid):
            x = schedule.step(eps, t, x, z_c, generator=generator)
    return x


def load_images(n: int):
    from resulic.images import list_images, open_image, sample_images

    if KODAK.is_dir():
        return "kodak", [(p.stem, open_image(p)) for p in list_images(KODAK)[:n]]
    return "scikit-image samples", sample_images(n)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(model: str | None) -> None:
    """Run in a fresh process: load, then decode one 768x512 image; print peak RSS in MB."""
    from PIL import Image

    from resulic.codec.resolve import resolve_codec
    from resulic.services.runtime import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(1)
    codec = resolve_codec(model)
    img = Image.new("RGB", (768, 512))
    if KODAK.is_dir():
        from resulic.images import open_image

        img = open_image(KODAK / "kodim23.png")
    data = codec.compress(img)
    loaded = peak_rss_mb()
    codec.decompress(data)
    peak = peak_rss_mb()
    print(json.dumps({"after_load_and_encode_mb": loaded, "peak_mb": peak, "size": list(img.size)}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="trained-codec folder or model YAML (default: tiny)")
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_probe:
        memory_probe(args.model)
        return 0

    from resulic.codec.resolve import resolve_codec
    from resulic.services.runtime import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(1)
    codec = resolve_codec(args.model)
    source, images = load_images(args.images)
    rp = codec.config.rate_point
    print(f"model {codec.fingerprint.hex()} ({codec.config.backbone.profile}), S={rp.sampling_steps}, "
          f"N_r={rp.residual_steps}, guidance={rp.guidance}; images: {source}; torch threads: {torch.get_num_threads()}; "
          f"median of {args.repeats}\n")

    print("| image | size | file B | estimate B | overhead B | target (2 % + 12 B) | encode s | decode s | official-loop decode s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ours_evals = official_evals = None
    ratios = []
    for name, img in images:
        enc = codec.encode(img)
        est = enc.estimated_latent_bits / 8
        overhead = len(enc.data) - est
        target = 0.02 * est + 12
        t_enc = median_time(lambda: codec.encode(img), args.repeats)
        dec = codec.decode(enc.data)
        ours_evals = dec.network_evaluations
        t_dec = median_time(lambda: codec.decode(enc.data), args.repeats)
        official_evals = codec.decode(enc.data, sampler=official_loop_sample).network_evaluations
        t_off = median_time(lambda: codec.decode(enc.data, sampler=official_loop_sample), args.repeats)
        ratios.append(t_dec / t_off)
        print(f"| {name} | {img.size[0]}x{img.size[1]} | {len(enc.data)} | {est:.1f} | {overhead:+.1f} | "
              f"{'met' if overhead <= target else 'MISSED'} ({target:.1f}) | {t_enc:.2f} | {t_dec:.2f} | {t_off:.2f} | {t_dec / t_off:.2f} |")
    print(f"\nnetwork evaluations per decode: ours {ours_evals} (2 x (S-1)), official loop {official_evals} (2 x (S+1)); "
          f"median decode-time ratio ours/official: {statistics.median(ratios):.2f}")

    cmd = [sys.executable, __file__, "--memory-probe"] + (["--model", args.model] if args.model else [])
    probe = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    print(f"peak resident memory, load + encode + decode of one {probe['size'][0]}x{probe['size'][1]} image in a fresh "
          f"process: {probe['peak_mb']:.0f} MB (after load + encode: {probe['after_load_and_encode_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
