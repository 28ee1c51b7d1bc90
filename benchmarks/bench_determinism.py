"""The bitstream's determinism contract, measured: files made under one configuration, decoded
under every other.

    python benchmarks/bench_determinism.py [--model platform/resulic/weights/small-codecs/variable]
                                           [--images data/photos/images] [--crops 500] [--pixels 40]

Crops of varied photos (random sizes 128-384 px, random places, random rate levels) are encoded
once, with native kernels on one thread. Each file is then decoded under every other
configuration: oneDNN on, two threads, and every sum of the entropy networks taken in another
order (input channels in reversed chunks: what another kernel, thread split or device does to a
sum; and CUDA when there is a GPU); TAEF2 in bfloat16 changes no bit of ŷ (the entropy path is
float32 on native kernels), only pictures, which the pixel comparison measures. The same compressor runs twice: as trained (float entropy
parameters) and with exact entropy parameters (entropy/exact.py). A file "differs" when its
decoded ŷ is not bit-identical to the encoder's; it "fails" when any element is off by 0.5 or
more or the stream cannot be read at all (the symbols themselves desynchronised). For ``--pixels`` files the decoded pixels (z_c
through TAEF2) are compared too: the largest difference in grey levels. Prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def photos_in(folders: list[Path]) -> list:
    """(name, PIL image) of every photo in ``folders``; the bundled samples when none is given."""
    from resulic.images import list_images, open_image, sample_images

    if not folders:
        return sample_images()
    return [(p.stem, open_image(p)) for folder in folders for p in list_images(folder)]


def crops(photos: list, count: int, seed: int):
    """(name, PIL crop, level) triples: random sizes, places and rate levels over the photos."""
    rng = random.Random(seed)
    usable = [(n, img) for n, img in photos if min(img.size) >= 128]
    if not usable:
        raise SystemExit("error: no photo is 128 px or more on its shorter side")
    for _ in range(count):
        name, img = rng.choice(usable)
        # Sides in multiples of 128 px (the codec's stride), so no padding hides anything.
        w, h = (min(rng.choice((128, 256, 384)), side // 128 * 128) for side in img.size)
        left, top = rng.randrange(0, img.width - w + 1), rng.randrange(0, img.height - h + 1)
        yield f"{name}:{left},{top},{w}x{h}", img.crop((left, top, left + w, top + h)), rng.randrange(128)


def new_row() -> dict:
    return {"files": 0, "differ": 0, "fail": 0, "max": 0.0}


def tally(row: dict, model, data: bytes, hw: tuple[int, int], y_hat) -> None:
    """Decode ``data`` with ``model`` and count how its ŷ compares with the encoder's: a stream
    the decoder cannot even read (it desynchronised into an impossible symbol) is a failure."""
    from resulic.errors import BitstreamError

    row["files"] += 1
    try:
        diff = float((model.decode_symbols(data, hw).cpu() - y_hat).abs().max())
    except BitstreamError:
        diff = float("inf")
    row["differ"] += diff > 0
    row["fail"] += diff >= 0.5
    row["max"] = max(row["max"], diff)


@contextlib.contextmanager
def configuration(onednn: bool, threads: int, reordered: bool):
    import torch

    from resulic.entropy import exact

    saved = torch.backends.mkldnn.enabled, torch.get_num_threads(), exact.F.conv2d, torch.nn.Conv2d._conv_forward
    torch.backends.mkldnn.enabled = onednn
    torch.set_num_threads(threads)
    if reordered:
        real = torch.nn.functional.conv2d

        def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            if groups != 1:
                return real(x, weight, bias, stride, padding, dilation, groups)
            parts = list(zip(x.split(5, dim=1), weight.split(5, dim=1)))[::-1]
            out = sum(real(xc, wc, None, stride, padding, dilation) for xc, wc in parts)
            return out if bias is None else out + bias.reshape(1, -1, 1, 1)

        exact.F.conv2d = conv2d
        torch.nn.Conv2d._conv_forward = lambda self, x, w, b: conv2d(x, w, b, self.stride, self.padding, self.dilation)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled, _, exact.F.conv2d, torch.nn.Conv2d._conv_forward = saved
        torch.set_num_threads(saved[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "platform/resulic/weights/small-codecs/variable")
    p.add_argument("--images", type=Path, action="append", default=None,
                   help="photo folders (default: data/photos/images and heldout, else the bundled samples)")
    p.add_argument("--crops", type=int, default=500)
    p.add_argument("--pixels", type=int, default=40, help="files whose decoded pixels are compared too")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from resulic.codec.store import load_codec, load_compressor_state
    from resulic.models.compressor import LatentCompressor
    from resulic.images import image_to_tensor
    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    folders = args.images or [f for f in (REPO / "data/photos/images", REPO / "data/photos/heldout") if f.is_dir()]
    photos = photos_in(folders)
    codec = load_codec(args.model)
    def rebuilt(exact: bool, device: str = "cpu") -> LatentCompressor:
        """The codec's compressor (same weights) with float or exact entropy parameters."""
        config = codec.config.compressor.model_copy(update={"exact_entropy_parameters": exact})
        model = LatentCompressor(config)
        load_compressor_state(model, codec.compressor.state_dict())
        return model.to(device).eval()

    models = {"float parameters": rebuilt(False), "exact parameters": rebuilt(True)}
    anchors = codec.config.rate_point.variable.anchors if codec.config.rate_point.variable else None

    decoders = {"oneDNN, 1 thread": (True, 1, False), "oneDNN, 2 threads": (True, 2, False),
                "native, 2 threads": (False, 2, False), "sums reordered": (False, 1, True)}
    files = []
    with configuration(False, 1, False):
        for name, img, level in tqdm(list(crops(photos, args.crops, args.seed)), desc="encode", unit="crop"):
            with torch.no_grad():
                z0 = codec.backbone.encode(image_to_tensor(img))
            position = None if anchors is None else level / 127 * (anchors - 1)
            for label, model in models.items():
                out = model.compress(z0, position)
                files.append((label, name, out.data, tuple(z0.shape[-2:]), position,
                              model.decode_symbols(out.data, tuple(z0.shape[-2:]))))
    rows = {}
    for dec_name, settings in decoders.items():
        with configuration(*settings):
            for label, name, data, hw, position, y_hat in tqdm(files, desc=dec_name, unit="file"):
                tally(rows.setdefault((label, dec_name), new_row()), models[label], data, hw, y_hat)
    if torch.cuda.is_available():
        for label in models:
            gpu = rebuilt(label == "exact parameters", "cuda")
            for _, name, data, hw, position, y_hat in [f for f in files if f[0] == label]:
                tally(rows.setdefault((label, "CUDA"), new_row()), gpu, data, hw, y_hat)

    print(f"\n{len(files) // len(models)} crops of {len(photos)} photos; encoder: native kernels, 1 thread")
    print("| entropy parameters | decoder | files | ŷ differs | symbols desynchronised | largest Δŷ |")
    print("|---|---|---|---|---|---|")
    for (label, dec_name), r in rows.items():
        print(f"| {label} | {dec_name} | {r['files']} | {r['differ']} | {r['fail']} | {r['max']:.3g} |")

    sizes = {label: sum(len(f[2]) for f in files if f[0] == label) for label in models}
    if len(sizes) == 2:
        base, exact_bytes = sizes["float parameters"], sizes["exact parameters"]
        print(f"\nlatent bytes of all files: float {base:,}, exact {exact_bytes:,} ({exact_bytes / base - 1:+.2%})")

    # Pixels: z_c through TAEF2 under the encoder's configuration, under two oneDNN threads, and
    # with TAEF2 in bfloat16 (RESULIC_TAEF2_PRECISION=bf16; the entropy path stays fp32, so the
    # same ŷ and z_c: only TAEF2's arithmetic differs).
    autoencoder = codec.backbone.vae
    worst = {"oneDNN, 2 threads": 0.0, "TAEF2 in bf16 (oneDNN, 1 thread)": 0.0}
    sample = [f for f in files if f[0] == list(models)[-1]][: args.pixels]
    for _, name, data, hw, position, _ in tqdm(sample, desc="pixels", unit="file"):
        model = models[list(models)[-1]]
        images = {}
        for label, settings, precision in (("reference", (False, 1, False), "fp32"),
                                           ("oneDNN, 2 threads", (True, 2, False), "fp32"),
                                           ("TAEF2 in bf16 (oneDNN, 1 thread)", (True, 1, False), "bf16")):
            autoencoder.precision = precision
            with configuration(*settings), torch.no_grad():
                z_c = model.decompress(data, hw, position)
                images[label] = np.asarray(codec.backbone.decode(z_c).clamp(0, 1).mul(255).round())
        autoencoder.precision = "fp32"
        for label in worst:
            worst[label] = max(worst[label], float(np.abs(images["reference"] - images[label]).max()))
    for label, value in worst.items():
        print(f"\ndecoded pixels, {len(sample)} files, native 1 thread vs {label}: "
              f"largest difference {value:.0f} grey level(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
