"""The critics of stage 2's optional adversarial term (``loss.lambda_adversarial``), both trained
with the hinge loss, and both returning one logit map per scale.

- ``patch``: a small PatchGAN on pixels, spectral norm on its strided layers. Round 12
  (docs/small-profile.md) found it a weak critic at a CPU run's scale: alone, it separated photo
  crops from the same crops blurred only to a hinge loss of 1.2-1.6 in 300 steps.
- ``features``: heads on the frozen ImageNet EfficientNet-Lite0 features that the feature loss
  uses (1/4, 1/8, 1/16 resolution), in the spirit of Projected GANs (Sauer et al., 2021): the
  features already separate texture from blur, so only the small heads learn. The feature network
  is shared, frozen, and kept out of the module tree (neither checkpointed nor trained).

No Ray, no MLflow.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .feature_loss import EfficientNetLite0Features, load_efficientnet_lite0

FEATURE_CHANNELS = (24, 40, 80)  # feature_loss.FEATURE_BLOCKS' outputs


class PatchDiscriminator(nn.Module):
    """A small PatchGAN on [-1, 1] pixels (spectral norm keeps it stable); one logit map."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        self.layers = nn.Sequential(
            sn(nn.Conv2d(3, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.layers(x)]


class FeatureDiscriminator(nn.Module):
    """A logit map per depth of the frozen EfficientNet-Lite0, from a small trained head each."""

    def __init__(self, net: EfficientNetLite0Features | None = None, width: int = 64) -> None:
        super().__init__()
        net = net if net is not None else load_efficientnet_lite0()
        self.__dict__["net"] = net.eval().requires_grad_(False)  # frozen, shared with the feature loss
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, width, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(width, 1, 1),
            )
            for c in FEATURE_CHANNELS
        )

    def _apply(self, fn, recurse: bool = True):  # .to(device) moves the frozen network too
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [head(f) for head, f in zip(self.heads, self.net(x))]


def build_discriminator(kind: str, net: EfficientNetLite0Features | None = None) -> nn.Module:
    if kind == "patch":
        return PatchDiscriminator()
    if kind == "features":
        return FeatureDiscriminator(net)
    raise ValueError(f"loss.discriminator: unknown critic {kind!r} (patch or features)")


def mean_logit(logits: list[Tensor]) -> Tensor:
    """The generator's hinge term is minus this: every scale weighs the same."""
    return sum(m.mean() for m in logits) / len(logits)


def hinge(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """The critic's hinge loss, averaged over scales: 2 when it cannot tell, 0 when every patch is
    beyond the margin."""
    per_scale = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)]
    return sum(per_scale) / len(per_scale)
