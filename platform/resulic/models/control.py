"""The control module: ControlNet-XS fed by z_c at latent resolution (RESULIC.md §3.5).

diffusers' ``ControlNetXSAdapter`` + ``UNetControlNetXSModel`` implement the structure:
a slim copy of the UNet encoder and middle block (``size_ratio`` of its width) with
bidirectional zero-initialised 1x1 links: base -> control features are concatenated to the
control stream after every encoder block, control -> base features are added after every
encoder block, after the middle block and before every decoder block. We configure it so that

- z_c enters at latent resolution (one conditioning-embedding stage, no downsampling);
- the control module has its own time embedding (``time_embedding_mix=0``);
- its weights start as the UNet's, tiled and cropped where widths differ, as the official
  code does; every link starts at zero, so at initialisation the output equals the UNet's.

Difference from the official module (documented in docs/architecture.md): the official one
feeds ``concat(z_n, z_c)`` through one 3x3 conv; here z_n goes through the control's
``conv_in`` and z_c through a conditioning embedding (3x3 conv, SiLU, zero-initialised 3x3
conv) whose output is added. A 3x3 conv of a concatenation is the sum of two 3x3 convs, so the
only change is the extra SiLU stage on the z_c path.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import ControlConfig

if TYPE_CHECKING:  # imported where the module is built: an encoder never needs diffusers
    from diffusers import ControlNetXSAdapter, UNet2DConditionModel, UNetControlNetXSModel

LINK_MARKERS = ("base_to_ctrl", "ctrl_to_base", "control_to_base_for_conv_in")


def _tile_crop(src: Tensor, shape: torch.Size) -> Tensor:
    """Repeat ``src`` along every axis where it is smaller, then crop to ``shape``."""
    reps = [max(1, -(-t // s)) for s, t in zip(src.shape, shape)]
    out = src.repeat(*reps)
    return out[tuple(slice(0, t) for t in shape)].clone()


def _base_name(ctrl_name: str) -> str | None:
    if any(m in ctrl_name for m in LINK_MARKERS) or "controlnet_cond_embedding" in ctrl_name:
        return None
    parts = ctrl_name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("ctrl_"):
            parts[i] = "base_" + part[len("ctrl_"):]
            return ".".join(parts)
    return None


def build_control_unet(unet: UNet2DConditionModel, config: ControlConfig) -> UNetControlNetXSModel:
    """The UNet with its control module; only the control parameters are trainable."""
    from diffusers import ControlNetXSAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        adapter = ControlNetXSAdapter.from_unet(
            unet,
            size_ratio=config.size_ratio,
            learn_time_embedding=True,
            conditioning_channels=unet.config.in_channels,
            time_embedding_mix=0.0,
            conditioning_embedding_out_channels=(config.conditioning_channels,),
        )
        model = _join(unet, adapter)
    _init_from_base(model)
    model.freeze_unet_params()
    _share_base(model, unet)
    model.eval()
    return model


# Where diffusers' joined model keeps each part of the base UNet (from_unet copies them there).
_BASE_RENAMES = (
    (re.compile(r"^base_(conv_in|conv_norm_out|conv_out|time_embedding)\."), r"\1."),
    (re.compile(r"^(down_blocks\.\d+)\.base_(resnets|attentions)\."), r"\1.\2."),
    (re.compile(r"^(down_blocks\.\d+)\.base_downsamplers\."), r"\1.downsamplers.0."),
    (re.compile(r"^mid_block\.base_midblock\."), "mid_block."),
    (re.compile(r"^(up_blocks\.\d+)\.upsamplers\."), r"\1.upsamplers.0."),
)


def _unet_name(name: str) -> str:
    for pattern, replacement in _BASE_RENAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return name  # up_blocks.i.resnets / attentions: the UNet's own names


def _share_base(model: UNetControlNetXSModel, unet: UNet2DConditionModel) -> None:
    """Make the joined model's frozen base parameters the UNet's own tensors, not copies: the
    prior is held once however many codecs (rate points, a Serve replica's versions) are built on
    one backbone — 49 MB per codec for the small profile, 3.4 GB for SD 2.1's UNet. Only a
    parameter whose copy is exactly the UNet's is shared, so the results cannot change; and only a
    frozen one, so a prior being trained is never tied in (its requires_grad would then make the
    base look like control weights to ``control_state_dict``)."""
    unet_params = dict(unet.named_parameters())
    for name, param in list(model.named_parameters()):
        if param.requires_grad:
            continue  # the control module's own weights
        own = unet_params.get(_unet_name(name))
        if own is None or own.requires_grad or own.shape != param.shape or own.dtype != param.dtype or not torch.equal(own, param):
            continue
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._parameters[leaf] = own


def _join(unet: UNet2DConditionModel, adapter: ControlNetXSAdapter) -> UNetControlNetXSModel:
    """``UNetControlNetXSModel.from_unet`` for any number of latent channels.

    diffusers builds the input and output convs of the joined model and of the adapter for
    Stable Diffusion's 4 channels whatever the UNet has; TAEF2's latent has 32. Those three convs
    are rebuilt at the UNet's width before the weights are copied in; for 4 channels this is
    exactly ``from_unet``.
    """
    from diffusers import UNetControlNetXSModel

    channels_in, channels_out = unet.config.in_channels, unet.config.out_channels
    if channels_in == 4 and channels_out == 4:
        return UNetControlNetXSModel.from_unet(unet, adapter)
    widen = lambda conv, n_in, n_out: torch.nn.Conv2d(n_in, n_out, conv.kernel_size, padding=conv.padding)  # noqa: E731
    adapter.conv_in = widen(adapter.conv_in, channels_in, adapter.conv_in.out_channels)
    shell = UNetControlNetXSModel.from_config({**_joined_config(unet, adapter)})
    shell.base_conv_in = widen(shell.base_conv_in, channels_in, shell.base_conv_in.out_channels)
    shell.ctrl_conv_in = widen(shell.ctrl_conv_in, channels_in, shell.ctrl_conv_in.out_channels)
    shell.base_conv_out = widen(shell.base_conv_out, shell.base_conv_out.in_channels, channels_out)
    original = UNetControlNetXSModel.from_config
    try:
        # from_unet builds its model through from_config: hand it the widened shell instead.
        UNetControlNetXSModel.from_config = classmethod(lambda cls, *a, **k: shell)
        return UNetControlNetXSModel.from_unet(unet, adapter)
    finally:
        UNetControlNetXSModel.from_config = original


def _joined_config(unet: UNet2DConditionModel, adapter: ControlNetXSAdapter) -> dict:
    """The config ``from_unet`` gives the joined model (the same keys it reads)."""
    unet_keys = (
        "sample_size", "down_block_types", "up_block_types", "block_out_channels", "norm_num_groups",
        "cross_attention_dim", "transformer_layers_per_block", "addition_embed_type", "addition_time_embed_dim",
        "upcast_attention", "use_linear_projection", "time_cond_proj_dim", "projection_class_embeddings_input_dim",
    )
    ctrl_keys = (
        "conditioning_channels", "conditioning_embedding_out_channels", "conditioning_channel_order",
        "learn_time_embedding", "block_out_channels", "num_attention_heads", "max_norm_num_groups",
    )
    config = {k: v for k, v in unet.config.items() if k in unet_keys}
    config["num_attention_heads"] = unet.config.attention_head_dim
    config.update({"ctrl_" + k: v for k, v in adapter.config.items() if k in ctrl_keys})
    config["time_embedding_mix"] = adapter.config.time_embedding_mix
    return config


@torch.no_grad()
def _init_from_base(model: UNetControlNetXSModel) -> None:
    params = dict(model.named_parameters())
    for name, param in params.items():
        if any(m in name for m in LINK_MARKERS):
            param.zero_()
            continue
        base = _base_name(name)
        if base is not None and base in params:
            param.copy_(_tile_crop(params[base], param.shape))


def control_state_dict(model: UNetControlNetXSModel) -> dict[str, Tensor]:
    """The trained part: every parameter outside the frozen base UNet."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_control_state(model: UNetControlNetXSModel, state: dict[str, Tensor]) -> None:
    expected = set(control_state_dict(model))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise KeyError(
            f"control weights do not match the model: {len(missing)} missing "
            f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise KeyError(f"control weight {name}: shape {tuple(tensor.shape)}, expected {tuple(params[name].shape)}")
            params[name].copy_(tensor)
