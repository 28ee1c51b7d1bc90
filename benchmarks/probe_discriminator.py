"""Can stage 2's critic tell a photo crop from the same crop slightly blurred? The critic
alone (train/discriminator.py's, its Adam as the trainer builds it), trained on 128-px
crops of the sample photos against the same crops after a 3x3 box blur; prints its hinge loss
(2.0: it cannot tell; 0: every patch separated by the margin) and its mean logits.

    python benchmarks/probe_discriminator.py [--critic patch|features] [--steps 300] [--lr 2e-3] [--batch 4]

Round 12 (docs/small-profile.md): hinge 1.2-1.6 after 300 steps at lr 2e-3 (the value of one
batch: noisy), where a critic that separates the two reaches 0.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--critic", choices=["patch", "features"], default="patch", help="loss.discriminator")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-3, help="the discriminator's Adam (optim.disc_lr)")
    p.add_argument("--batch", type=int, default=4, help="crops a step")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.crop) < 1 or args.lr <= 0:
        p.error("--steps, --batch, --crop and --lr must be positive")

    from resulic.images import sample_images
    from resulic.train.discriminator import build_discriminator, hinge, mean_logit

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    photos = [torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
              for _, img in sample_images(4)]
    photos = [x for x in photos if min(x.shape[1:]) >= args.crop]
    if not photos:
        p.error(f"--crop {args.crop}: larger than every sample photo")

    def crops() -> torch.Tensor:
        out = []
        for _ in range(args.batch):
            x = photos[rng.integers(len(photos))]
            i, j = rng.integers(x.shape[1] - args.crop + 1), rng.integers(x.shape[2] - args.crop + 1)
            out.append(x[:, i:i + args.crop, j:j + args.crop])
        return torch.stack(out)

    critic = build_discriminator(args.critic)
    opt = torch.optim.Adam(critic.parameters(), lr=args.lr, betas=(0.5, 0.9))  # as train/loop.py builds it
    print("| step | hinge loss | mean logit, photo | mean logit, blurred |\n|---|---|---|---|")
    for step in range(args.steps + 1):
        real = crops()
        blurred = F.avg_pool2d(real, 3, 1, 1)
        real_logits, blurred_logits = critic(real), critic(blurred)
        loss = hinge(real_logits, blurred_logits)
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            print(f"| {step} | {loss.item():.3f} | {mean_logit(real_logits).item():.3f} | {mean_logit(blurred_logits).item():.3f} |")
        if step < args.steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
