"""The frozen Stable Diffusion parts: VAE, UNet, text encoder and tokenizer.

Three profiles build the same diffusers/transformers classes:

- ``sd21``: Stable Diffusion 2.1-base loaded from a hub id or a local folder in diffusers layout
  (``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``). Its text encoder is the 23-layer
  OpenCLIP-H conversion, so ``last_hidden_state`` is the penultimate layer plus ``ln_final``,
  which is what SD 2.1 and the ResULIC decoder condition on.
- ``tiny``: small configs with seeded random weights, so that everything runs on a CPU in
  seconds and every machine builds bit-identical weights from the same seed.
- ``small``: a real pretrained autoencoder, TAEF2 (FLUX.2's latent space, 32 channels, shipped
  in ``resulic/weights/taef2``), a CPU-sized UNet prior trained by the platform's stage 0 (the
  shipped one in ``resulic/weights/small-prior``, a stage-0 run's folder, or seeded random
  weights to start stage 0 from), and the tiny profile's seeded text encoder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from ..config import TEXT_LENGTH, BackboneConfig
from ..errors import ModelLoadError
from .taef2 import LATENT_CHANNELS as TAEF2_CHANNELS
from .taef2 import TinyAutoencoder
from .tokenizer import byte_level_tokenizer

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

# diffusers and transformers' CLIP model are imported where a part is built, not here: together
# they take seconds and ~250 MB (diffusers imports torch._dynamo), and an encoder needs neither
# (``load_small_encoder``).

SD_SCALING_FACTOR = 0.18215

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=256,
    scaling_factor=SD_SCALING_FACTOR,
)
# Same block layout as SD 2.1 (two res-blocks per level, cross-attention, a plain last level),
# so the ControlNet-XS adapter is built the same way; attention skips the full-resolution
# level to keep CPU decodes quick.
TINY_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(32, 64, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
TINY_TEXT = dict(
    vocab_size=514,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=TEXT_LENGTH,
    bos_token_id=512,
    eos_token_id=513,
    pad_token_id=513,
)

# The small profile's prior: SD's block layout (two res-blocks per level, cross-attention in the
# middle levels) on TAEF2's 32-channel latent, sized so a CPU trains it in an hour and decodes a
# Kodak image in about a second.
SMALL_UNET = {
    **TINY_UNET,
    "sample_size": 32,
    "in_channels": TAEF2_CHANNELS,
    "out_channels": TAEF2_CHANNELS,
    "block_out_channels": (64, 128, 128, 128),
}
# Where the small profile's shipped parts live (inside the package, so a clone has them).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SMALL_PRIOR = WEIGHTS_DIR / "small-prior"
PRIOR_SUBFOLDER = "unet"
# The identities of the priors earlier releases shipped in ``small-prior`` (oldest first). A new
# prior is a decoder upgrade, not a new bitstream: a codec trained on an earlier one loads with
# the current prior and still reads the files it wrote (the same bits through the same entropy
# model; the picture is the current prior's). ``Codec.earlier_fingerprints`` names those files.
EARLIER_BUNDLED_PRIORS: tuple[str, ...] = ("small:2a9b3dca12e733c4",)

# Stable Diffusion 2.1-base's published configs (the vae/, unet/ and text_encoder/ config.json
# of stabilityai/stable-diffusion-2-1-base): the real shapes, for random-weight checks of memory
# and speed where the weights are absent (benchmarks/gpu_check.py). The text encoder keeps the
# byte-level tokenizer's special ids; its 49,408-row embedding is CLIP's.
SD21_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=SD_SCALING_FACTOR,
)
SD21_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
)
SD21_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=TEXT_LENGTH,
    hidden_act="gelu",
    projection_dim=512,
    bos_token_id=512,
    eos_token_id=513,
    pad_token_id=513,
)


@dataclass
class Backbone:
    """Frozen SD parts with the three operations the codec needs. An encoder's backbone
    (``load_small_encoder``) has no UNet and no text encoder: None."""

    vae: AutoencoderKL | TinyAutoencoder
    unet: UNet2DConditionModel | None
    text_encoder: CLIPTextModel | None
    tokenizer: CLIPTokenizer
    identity: str  # what the model fingerprint records about the backbone
    # Identities this backbone stands in for (the earlier bundled priors, for ``bundled``):
    # files made through them decode through this one.
    earlier_identities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in self.parts():
            part.requires_grad_(False)
            part.eval()

    def parts(self) -> list[torch.nn.Module]:
        return [part for part in (self.vae, self.unet, self.text_encoder) if part is not None]

    @property
    def scaling_factor(self) -> float:
        if isinstance(self.vae, TinyAutoencoder):
            return self.vae.scaling_factor
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        if isinstance(self.vae, TinyAutoencoder):
            return self.vae.latent_channels
        return int(self.vae.config.latent_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W) -> scaled latent z_0 (the KL posterior's mode)."""
        if isinstance(self.vae, TinyAutoencoder):
            return self.vae.encode(x) * self.scaling_factor
        posterior = self.vae.encode(x * 2 - 1).latent_dist
        return posterior.mode() * self.scaling_factor

    def decode_unclamped(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> images on the [0, 1] scale, not clamped (pixel losses keep gradients)."""
        if isinstance(self.vae, TinyAutoencoder):
            return self.vae.decode(z / self.scaling_factor)
        return (self.vae.decode(z / self.scaling_factor).sample + 1) / 2

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> images in [0, 1]."""
        return self.decode_unclamped(z).clamp(0, 1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        ).input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids).last_hidden_state

    def encode_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text features of ready-made (B, 77) input ids (the decoder's prompt from coded tokens)."""
        return self.text_encoder(input_ids.to(self.text_encoder.device)).last_hidden_state

    def to(self, device: torch.device | str) -> "Backbone":
        for part in self.parts():
            part.to(device)
        return self


def weights_digest(*parts: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors of modules or state dicts (names, shapes and bytes)."""
    h = hashlib.sha256()
    for part in parts:
        tensors = part.state_dict() if isinstance(part, torch.nn.Module) else part
        for name, tensor in sorted(tensors.items()):
            t = tensor.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def build_random(vae: dict, unet: dict, text: dict, seed: int, name: str, digest: bool = True) -> Backbone:
    """The diffusers/transformers classes from config dicts with seeded random weights (the
    same on every machine) and the byte-level tokenizer. ``digest=False`` names the weights by
    seed instead of hashing them (hashing SD 2.1's 1.3 B parameters takes a while)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae_model = AutoencoderKL(**vae)
        unet_model = UNet2DConditionModel(**unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text))
    tag = weights_digest(vae_model, unet_model, text_encoder)[:16] if digest else f"seed{seed}"
    return Backbone(vae_model, unet_model, text_encoder, byte_level_tokenizer(), f"{name}:{tag}")


def build_tiny(config: BackboneConfig) -> Backbone:
    return build_random(TINY_VAE, TINY_UNET, TINY_TEXT, config.seed, "tiny")


def build_sd21_random(seed: int = 0) -> Backbone:
    """SD 2.1-base's shapes with random weights: for GPU memory/speed checks, not for images."""
    return build_random(SD21_VAE, SD21_UNET, SD21_TEXT, seed, "sd21-random", digest=False)


def load_sd21(config: BackboneConfig) -> Backbone:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from huggingface_hub import constants as hf_constants
    from transformers import CLIPTextModel

    source = config.source
    local = Path(source).expanduser()
    if local.is_dir():
        where, kwargs = f"local folder {local.resolve()}", {}
        source = str(local)
    else:
        where = f"hub id {source!r} (cache: {hf_constants.HF_HUB_CACHE})"
        kwargs = {"revision": config.revision} if config.revision else {}
    try:
        # use_safetensors: never fall back to .bin pickles (loading one can run code).
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", use_safetensors=True, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", use_safetensors=True, **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", use_safetensors=True, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
    except Exception as exc:  # diffusers/transformers raise OSError, ValueError, HF errors...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"backbone.source: cannot load Stable Diffusion 2.1 from {where}: {detail}\n"
            "Set backbone.source to a folder holding vae/, unet/, text_encoder/ and tokenizer/ "
            "(diffusers layout), or to a hub id that is already in the cache (downloads are off "
            "when HF_HUB_OFFLINE=1)."
        ) from None
    if unet.config.layers_per_block != 2:
        raise ModelLoadError(
            f"backbone.source: the UNet at {where} has layers_per_block="
            f"{unet.config.layers_per_block}; the ControlNet-XS control module needs 2 (as SD has)"
        )
    identity = f"sd21:{config.source}@{config.revision or 'default'}"
    return Backbone(vae, unet, text_encoder, tokenizer, identity)


def random_small_prior(seed: int) -> UNet2DConditionModel:
    """The small profile's UNet with seeded random weights: where stage 0 starts."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**SMALL_UNET)


def small_prior_folder(source: str) -> Path:
    """``bundled`` -> the shipped prior; otherwise a folder holding ``unet/`` (a stage-0 run's
    published ``model`` folder, or any folder ``save_prior`` wrote)."""
    folder = SMALL_PRIOR if source == "bundled" else Path(source).expanduser()
    if not (folder / PRIOR_SUBFOLDER / "config.json").is_file():
        hint = (
            "the shipped prior is missing from this installation (resulic/weights/small-prior)"
            if source == "bundled"
            else "expected a folder with unet/ (a stage-0 run's model folder)"
        )
        raise ModelLoadError(f"backbone.source: no diffusion prior at {folder}: {hint}")
    return folder


def _bundled_taef2() -> TinyAutoencoder:
    try:
        return TinyAutoencoder.from_folder()
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(f"small profile: cannot load the bundled TAEF2 weights: {exc}") from None


def load_small_encoder() -> Backbone:
    """What a small-profile encoder needs: TAEF2 and the tokenizer. A file's bits depend on the
    TAEF2 encoder, the compressor and the text, never on the prior or the text encoder, so neither
    is loaded (nor diffusers imported); the identity is unknown here, and the codec takes its
    fingerprint from its folder's manifest (``store.load_codec(encode_only=True)``)."""
    return Backbone(_bundled_taef2(), None, None, byte_level_tokenizer(), "small:encoder-only")


def load_small(config: BackboneConfig) -> Backbone:
    """TAEF2 + the stage-0 prior (or a seeded random one for ``source: random``) + tiny text."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = _bundled_taef2()
    if config.source == "random":
        unet = random_small_prior(config.seed)
    else:
        folder = small_prior_folder(config.source)
        try:
            # Stored in float16 when shipped; computed in float32.
            unet = UNet2DConditionModel.from_pretrained(
                folder, subfolder=PRIOR_SUBFOLDER, use_safetensors=True, torch_dtype=torch.float32
            )
        except Exception as exc:  # diffusers raises OSError, ValueError, safetensors errors...
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"backbone.source: cannot load the diffusion prior in {folder}: {detail}") from None
        if unet.config.in_channels != TAEF2_CHANNELS or unet.config.layers_per_block != 2:
            raise ModelLoadError(
                f"backbone.source: the UNet in {folder} is not a small-profile prior "
                f"(in_channels {unet.config.in_channels}, layers_per_block {unet.config.layers_per_block})"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    # The prior's weights name it (not its path): the same prior anywhere is the same backbone.
    identity = f"small:{weights_digest(unet, text_encoder)[:16]}"
    earlier = tuple(i for i in EARLIER_BUNDLED_PRIORS if i != identity) if config.source == "bundled" else ()
    return Backbone(vae, unet, text_encoder, byte_level_tokenizer(), identity, earlier)


def save_prior(unet: UNet2DConditionModel, folder: str | Path) -> Path:
    """Write a prior where ``backbone.source`` of the small profile can load it from."""
    folder = Path(folder)
    unet.save_pretrained(folder / PRIOR_SUBFOLDER, safe_serialization=True)
    return folder


def load_backbone(config: BackboneConfig) -> Backbone:
    if config.profile == "tiny":
        return build_tiny(config)
    if config.profile == "small":
        return load_small(config)
    return load_sd21(config)


def save_backbone(backbone: Backbone, folder: str | Path) -> None:
    """Write the parts in diffusers layout, so a ``sd21`` profile can load them from ``folder``."""
    folder = Path(folder)
    backbone.vae.save_pretrained(folder / "vae")
    backbone.unet.save_pretrained(folder / "unet")
    backbone.text_encoder.save_pretrained(folder / "text_encoder")
    backbone.tokenizer.save_pretrained(folder / "tokenizer")
