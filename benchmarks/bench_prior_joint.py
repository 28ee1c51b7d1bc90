"""Stage 1 with the prior frozen (as ResULIC freezes SD) or trained jointly, on a small budget.

Both runs start from the same trained codec, see the same crops, timesteps and noise, and
differ only in whether the prior's weights (the base UNet inside the control UNet) train too,
at --prior-lr. The compressor and the control module train in both (ε-loss + λ_R·R + guide
loss: the full stage 1, not the compressor warm-up the shipped points had). Measured on images
no run trained on (--images, default Kodak):

- the ε-loss at the residual timesteps the decoder uses (n = 1..N_r, fixed noise): the
  training objective, held out;
- real files through the whole codec: bpp, PSNR and ST-LPIPS of the decoded picture;
- the time of a training step.

    python benchmarks/bench_prior_joint.py --steps 120 --max-images 4 -o outputs/prior-joint

Prints a table (start, frozen, joint) and writes results.json. In process, no Ray.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: must be > 0")
        return value
    return parse


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--init", default=str(ROOT / "platform/resulic/weights/small-codecs/r2"),
                   help="the fixed-rate trained-codec folder both runs start from (default: the shipped r2)")
    p.add_argument("--data", default="data/photos/manifest.jsonl", help="training manifest with cached latents")
    p.add_argument("--images", default=str(ROOT.parent / "shared/datasets/kodak"), help="held-out images")
    p.add_argument("--max-images", type=_positive(int), default=4)
    p.add_argument("--steps", type=_positive(int), default=120)
    p.add_argument("--batch-size", type=_positive(int), default=8)
    p.add_argument("--crop", type=_positive(int), default=128)
    p.add_argument("--lambda-rate", type=_positive(float), default=0.3, help="λ_R of both runs (the shipped r2 was trained at 0.3)")
    p.add_argument("--lr", type=_positive(float), default=5e-4, help="compressor and control module")
    p.add_argument("--prior-lr", type=_positive(float), default=1e-4, help="the prior's weights, in the joint run")
    p.add_argument("--threads", type=_positive(int), default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", default="outputs/prior-joint")
    return p.parse_args(argv)


def _held_out(folder: Path, limit: int):
    from resulic.images import list_images, open_image

    paths = list_images(folder)[:limit]  # ImageError (one line) when the folder is missing
    if not paths:
        raise SystemExit(f"{folder}: no images")
    return [(p.stem, open_image(p)) for p in paths]


def _batches(records, crop: int, batch_size: int, seed: int):
    """The same stream of crops for every run (a seeded generator, not Ray Data's)."""
    import torch

    from resulic.data.dataset import CropAndDrop

    cropper = CropAndDrop(crop, caption_dropout=1.0)
    cropper.rng = np.random.default_rng(seed)
    order = np.random.default_rng(seed + 1)
    while True:
        rows = [cropper({"path": r.path, "caption": r.caption, "latent": r.latent})
                for r in (records[i] for i in order.integers(0, len(records), batch_size))]
        images = torch.from_numpy(np.stack([r["image"] for r in rows])).permute(0, 3, 1, 2).float().div(255)
        latents = torch.from_numpy(np.stack([r["latent"] for r in rows]).astype(np.float32))
        yield images, latents


def _eps_loss(trainable, latents, draws: int = 6) -> float:
    """ε-loss of the current weights at n = 1..N_r (evenly spread), with fixed noise."""
    import torch
    import torch.nn.functional as F

    schedule = trainable.schedule
    generator = torch.Generator().manual_seed(0)
    steps = np.linspace(1, schedule.N, draws).round().astype(int)
    trainable.eval()
    losses = []
    with torch.no_grad():
        context = trainable.backbone.encode_text([""])
        for z0 in latents:
            z_c = trainable.compressor(z0)["z_c"]
            for n in steps:
                noise = torch.randn(z0.shape, generator=generator)
                step = torch.full((1,), int(n))
                z_n = schedule.q_sample(z0, z_c, noise, step)
                eps = trainable.cdm(z_n, step, encoder_hidden_states=context, controlnet_cond=z_c).sample
                losses.append(float(F.mse_loss(eps, noise)))
    trainable.train()
    return statistics.fmean(losses)


def _round_trip(trainable, images, suite) -> dict:
    from resulic.train.checkpoint import snapshot_codec

    codec = snapshot_codec(trainable, "cpu")
    rows = []
    for stem, image in images:
        enc = codec.encode(image)
        dec = codec.decode(enc.data)
        scores = suite(image, dec.image).scores
        rows.append({"image": stem, "bpp": len(enc.data) * 8 / (image.width * image.height), **scores})
    trainable.train()
    return {"per_image": rows, **{k: statistics.fmean(r[k] for r in rows) for k in ("bpp", "psnr-rgb", "st-lpips")}}


def _run(mode: str, args, backbone, config, records, images, latents, suite) -> dict:
    import torch

    from resulic.train.checkpoint import parts_from_folder
    from resulic.train.config import LossConfig
    from resulic.train.model import TrainableCodec

    compressor, cdm = parts_from_folder(args.init, config, backbone)
    control = {id(p) for p in cdm.parameters() if p.requires_grad}
    if mode == "joint":
        cdm.requires_grad_(True)
    trainable = TrainableCodec(config, backbone, compressor, cdm, 1, LossConfig(lambda_guide=1.0), args.lambda_rate)
    trainable.train()
    groups = trainable.parameter_groups()
    in_cdm = {id(p) for p in cdm.parameters()}
    prior = [p for p in groups["main"] if id(p) in in_cdm and id(p) not in control]  # empty when frozen
    main = [p for p in groups["main"] if id(p) not in in_cdm or id(p) in control]
    param_groups = [{"params": main}] + ([{"params": prior, "lr": args.prior_lr}] if prior else [])
    opt = torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=0.01)
    aux = torch.optim.AdamW(groups["aux"], lr=1e-3, weight_decay=0.0)
    if mode == "start":
        return {"mode": mode, "eps_loss": _eps_loss(trainable, latents), **_round_trip(trainable, images, suite)}
    torch.manual_seed(args.seed)
    batches = _batches(records, args.crop, args.batch_size, args.seed)
    step_seconds, losses = [], []
    for step in range(1, args.steps + 1):
        x, z0 = next(batches)
        t0 = time.perf_counter()
        terms = trainable(x, [""] * x.shape[0], z0)
        opt.zero_grad(set_to_none=True)
        aux.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        aux.step()
        step_seconds.append(time.perf_counter() - t0)
        losses.append(float(terms["loss_eps"]))
        if step % 20 == 0 or step == args.steps:
            print(f"  {mode}: step {step}/{args.steps}  eps {statistics.fmean(losses[-20:]):.4f}  "
                  f"{statistics.median(step_seconds):.2f} s/step", flush=True)
    return {"mode": mode, "prior_parameters_trained": sum(p.numel() for p in prior),
            "control_and_compressor_parameters": sum(p.numel() for p in main),
            "step_seconds_median": statistics.median(step_seconds), "train_eps_last20": statistics.fmean(losses[-20:]),
            "eps_loss": _eps_loss(trainable, latents), **_round_trip(trainable, images, suite)}


def main(argv=None) -> int:
    from resulic.errors import ResulicError

    args = _parse(argv)
    try:
        return _main(args)
    except ResulicError as exc:  # a bad --init, manifest or image: one line
        raise SystemExit(f"error: {exc}") from None


def _main(args) -> int:
    import torch

    from resulic.codec.store import folder_config
    from resulic.data.dataset import center_crop, read_manifest
    from resulic.images import image_to_tensor
    from resulic.metrics.suite import MetricSuite
    from resulic.models.backbone import load_backbone

    torch.set_num_threads(args.threads)
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data}: no training manifest (python jobs/build_dataset.py -o data/photos)")
    records = [r for r in read_manifest(args.data) if r.latent]
    if not records:
        raise SystemExit(f"{args.data}: the runs need cached latents (jobs/build_dataset.py writes them)")
    config = folder_config(Path(args.init))
    if config.compressor.gain_anchors:
        raise SystemExit(f"{args.init}: a variable-rate model; give a fixed-rate one (e.g. a shipped r1..r4)")
    images = _held_out(Path(args.images), args.max_images)
    suite = MetricSuite(names=["psnr", "st-lpips"])
    results = []
    for mode in ("start", "frozen", "joint"):
        backbone = load_backbone(config.backbone)  # fresh: the joint run changes the prior's weights
        with torch.no_grad():  # the ε-loss on a 256-px centre square of each held-out image
            latents = [backbone.encode(image_to_tensor(center_crop(image, 256))) for _, image in images]
        print(f"[{mode}]", flush=True)
        results.append(_run(mode, args, backbone, config, records, images, latents, suite))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": results}, indent=2) + "\n")
    print(f"\n{'run':<8} {'ε held-out':>11} {'bpp':>7} {'PSNR':>7} {'ST-LPIPS':>9} {'s/step':>7}")
    for r in results:
        print(f"{r['mode']:<8} {r['eps_loss']:>11.4f} {r['bpp']:>7.4f} {r['psnr-rgb']:>7.2f} {r['st-lpips']:>9.4f} "
              f"{r.get('step_seconds_median', float('nan')):>7.2f}")
    print(f"(steps {args.steps}, λ_R {args.lambda_rate}, batch {args.batch_size}, crop {args.crop}, lr {args.lr}, prior lr {args.prior_lr}; "
          f"{len(images)} held-out images from {args.images})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
