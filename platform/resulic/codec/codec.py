"""``Codec``: image -> bytes -> image with the ResULIC pipeline (RESULIC.md §1, §7).

compress:   pad to 128 px -> VAE encode (mode) -> z_0 -> latent compressor -> one rANS stream,
            and the header (size, model fingerprint, settings that differ from the rate point).
decompress: header -> entropy-decode z_c -> prompt from the text section -> residual DDIM from
            sqrt(a_N) z_c + sqrt(1 - a_N) eps (eps from the seed) with classifier-free guidance
            -> VAE decode -> crop.

The same bytes decode to the same pixels on the same kind of device.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import torch
from PIL import Image

from ..config import NEGATIVE_PROMPT, ModelConfig, Route
from ..diffusion.sampler import CallCounter, Sampler, residual_ddim_sample
from ..errors import BitstreamError, ModelLoadError, ModelMismatchError
from ..images import image_to_tensor, pad_to_multiple, padded_size, tensor_to_image
from ..models.backbone import Backbone, load_backbone, weights_digest
from ..models.compressor import LatentCompressor, build_compressor
from ..models.control import build_control_unet, control_state_dict
from ..semantics.prompt import check_clip_vocabulary, ids_to_text, prompt_input_ids, special_ids, text_token_ids
from ..semantics.text_coding import decode_ids, encode_ids
from .container import MAX_SIDE, TEXT_MODES, Container, Header, check_field, pack, unpack
from .limits import DEFAULT_LIMITS, DecodeLimits, check_settings

if TYPE_CHECKING:
    from ..diffusion.schedule import ResidualSchedule, ResidualSchedules

VAE_FACTOR = 8
# One-pass decoding: S = 2 without guidance — the step from t = N_r needs no network (x0 = z_c
# there), so this is a single network evaluation instead of S - 1 (x2 with guidance). Asked for
# by a file (its steps/guidance overrides) or by the receiver (``decode(..., one_pass=True)``).
ONE_PASS = {"steps": 2, "guidance": 1.0}


@dataclass
class EncodeResult:
    data: bytes
    width: int
    height: int
    latent_bytes: int
    text_bytes: int
    estimated_latent_bits: float  # -log2 likelihoods of what was coded
    seconds: float
    text_mode: int = 0
    text_tokens: list[int] = field(default_factory=list)  # what the text section codes
    semantics: dict = field(default_factory=dict)  # captions, residual, Pfo report (encoder side only)
    level: int | None = None  # a variable-rate model's rate level (None: a fixed-rate model)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bpp(self) -> float:
        """Always the file's bytes x 8 / pixels."""
        return len(self.data) * 8 / self.pixels

    @property
    def estimated_bpp(self) -> float:
        return self.estimated_latent_bits / self.pixels


class FileSettings(NamedTuple):
    """What a checked file asks of the decoder."""

    container: Container
    steps: int
    guidance: float
    seed: int
    level: int | None  # a variable-rate model's rate level; None: its default (or a fixed rate)


@dataclass
class DecodeResult:
    image: Image.Image
    header: Header
    text: str  # the decoded tokens as text (the decoder conditions on the tokens themselves)
    network_evaluations: int  # UNet+control evaluations, counting each CFG branch
    seconds: float
    timings: dict = field(default_factory=dict)
    text_tokens: list[int] = field(default_factory=list)


class Codec:
    """A ResULIC codec: frozen backbone + trained compressor and control module + rate point.

    An encoder (``store.load_codec(..., encode_only=True)``) has no control module (``cdm`` None)
    and a backbone without UNet or text encoder; it is given the fingerprint its folder's
    manifest names, and refuses to decode."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: Backbone,
        compressor: LatentCompressor,
        cdm: torch.nn.Module | None,
        device: str | torch.device = "cpu",
        fingerprint: bytes | None = None,
    ) -> None:
        if (cdm is None) != (fingerprint is not None):
            raise ValueError("an encoder (no control module) is given its fingerprint; a full codec computes its own")
        self.config = config
        self.backbone = backbone
        self.compressor = compressor.eval()
        self.cdm = None if cdm is None else cdm.eval()
        self.device = torch.device(device)
        if fingerprint is not None:
            self.fingerprint, self.earlier_fingerprints = fingerprint, ()
        else:
            self.fingerprint, *earlier = self._fingerprints(backbone.identity, *backbone.earlier_identities)
            # Files this codec also decodes: its own trained parts through an earlier bundled prior.
            self.earlier_fingerprints: tuple[bytes, ...] = tuple(earlier)
        check_clip_vocabulary(backbone.tokenizer)  # the text coder's model is over CLIP ids
        self._specials = special_ids(backbone.tokenizer)
        self.semantics = None  # resulic.semantics.pipeline.Semantics, built on first use

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def build(cls, config: ModelConfig | None = None, backbone: Backbone | None = None, device="cpu") -> "Codec":
        """A codec with freshly initialised trained parts (seeded, so every machine gets the same)."""
        config = config or ModelConfig()
        backbone = backbone or load_backbone(config.backbone)
        compressor = build_compressor(config)
        compressor.update(force=True)
        cdm = build_control_unet(backbone.unet, config.control)
        return cls(config, backbone, compressor, cdm, device).to(device)

    @cached_property
    def _schedules(self) -> ResidualSchedules:
        from ..diffusion.schedule import ResidualSchedules  # a diffusers scheduler: a decoder's import

        return ResidualSchedules(self.config.rate_point)

    @property
    def schedule(self) -> ResidualSchedule:
        """The residual schedule at the default rate level."""
        return self.schedule_for(None)

    @property
    def encode_only(self) -> bool:
        return self.cdm is None

    def schedule_for(self, level: int | None) -> ResidualSchedule:
        """The residual schedule of a file at ``level`` (its N_r follows the rate of a
        variable-rate model; a fixed-rate model has one)."""
        return self._schedules(self.config.rate_point.residual_steps_for(level))

    def rate_position(self, level: int | None) -> float | Route | None:
        """Where a file at ``level`` sits along the compressor's gain anchors (None: fixed rate);
        with two compressors (``rate_point.low_tier``), the whole route: which one, and where."""
        rp = self.config.rate_point
        if rp.variable is None:
            if level is not None:
                raise ValueError("this model has a fixed rate: a rate level (or a bpp target) needs a "
                                 "variable-rate model")
            return None
        route = rp.route(level)
        return route if rp.low_tier is not None else route.position

    def applies_control(self, level: int | None) -> bool:
        """Whether the control module steers a file at ``level`` (False: a tier whose levels the
        prior decodes alone, ``low_tier.control: none``)."""
        return self.config.rate_point.variable is None or self.config.rate_point.route(level).control

    def to(self, device: str | torch.device) -> "Codec":
        self.device = torch.device(device)
        self.backbone.to(self.device)
        self.compressor.to(self.device)
        if self.cdm is not None:
            self.cdm.to(self.device)
        return self

    def _fingerprints(self, *identities: str) -> list[bytes]:
        """4 bytes that change whenever anything the decoder depends on changes: one per
        backbone identity, the rest the same."""
        config = self.config.canonical_json().encode()
        parts = (weights_digest(self.compressor) + weights_digest(control_state_dict(self.cdm))).encode()
        return [hashlib.sha256(config + identity.encode() + parts).digest()[:4] for identity in identities]

    def keep_fingerprint(self, fingerprint: bytes) -> None:
        """Write ``fingerprint`` (one this codec decodes): a folder saved with an earlier bundled
        prior keeps naming its files as its manifest does, so what routes files by the manifest
        (a Serve catalog, the registry's tags) finds them. The bits do not depend on the prior."""
        if not self.decodes(fingerprint):
            raise ValueError(f"{fingerprint.hex()} is not a fingerprint of this codec")
        accepted = (self.fingerprint, *self.earlier_fingerprints)
        self.fingerprint = fingerprint
        self.earlier_fingerprints = tuple(fp for fp in accepted if fp != fingerprint)

    def decodes(self, fingerprint: bytes) -> bool:
        """Whether a file naming ``fingerprint`` is this codec's (made now, or through an earlier prior)."""
        return fingerprint == self.fingerprint or fingerprint in self.earlier_fingerprints

    # -- encoding ------------------------------------------------------------------------------
    def encode(
        self,
        image: Image.Image,
        *,
        text: str = "",
        caption: bool = False,
        srr: bool = False,
        pfo: bool = False,
        image_name: str | None = None,
        semantics=None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        level: int | None = None,
        latent: torch.Tensor | None = None,
    ) -> EncodeResult:
        """Compress one image. ``steps``/``guidance``/``seed`` override the rate point's decoder
        settings and cost a few header bytes; leave them None to use what the model implies.
        ``level`` is a variable-rate model's rate level (0..127, None: its default; see
        ``rate_control`` for a bpp target); ``latent``: the image's z_0 when the caller has it.

        Text (RESULIC.md §5): ``text`` is the original image's caption when the caller has one.
        Without ``srr`` a non-empty ``text`` (or, with ``caption=True``, the caption from the
        caption source) is sent whole (text mode 1). ``srr=True`` sends the semantic residual of
        that caption against the caption of the decoder's own starting point x' = VAE-decode(z_c)
        (mode 2); ``pfo=True`` refines the residual's tokens by prompt fidelity optimisation
        (mode 3, needs ``srr``). ``semantics`` (a ``Semantics``) supplies captioners, the
        residual extractor and Pfo's settings; ``image_name`` finds captions in a captions file.
        """
        t0 = time.perf_counter()
        width, height = image.size
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueError(f"image size {width}x{height} is outside 1..{MAX_SIDE}")
        if pfo and not srr:
            raise ValueError("pfo refines the semantic residual: use it together with srr")
        rp = self.config.rate_point
        position = self.rate_position(level)  # checks the level
        used_level = None if rp.variable is None else rp.variable.default_level if level is None else level
        level = None if rp.variable is None or level == rp.variable.default_level else level
        steps = None if steps == rp.sampling_steps else steps
        guidance = None if guidance == rp.guidance else guidance
        seed = None if seed == rp.seed else seed
        n_r = rp.residual_steps_for(level)
        if steps is not None and not 1 <= steps <= n_r:
            raise ValueError(f"steps must be in 1..{n_r} (the rate point's N_r)")
        if guidance is not None and not 0 <= guidance <= 100:
            raise ValueError("guidance must be in 0..100")
        for name, value in (("steps", steps), ("guidance", guidance), ("seed", seed)):
            if value is not None:  # what the header cannot hold is refused before the encode
                check_field(name, value)
        self._warn_over_default_limits(steps, guidance)
        with torch.no_grad():
            z0 = latent if latent is not None else self.latent_of(image)
            latent = self.compressor.compress(z0, position)
        text_mode = 3 if pfo else 2 if srr else 1 if (text.strip() or caption) else 0
        info: dict = {"text_mode": TEXT_MODES[text_mode]}
        ids: list[int] = []
        if text_mode:
            sem = semantics or self._default_semantics()
            original = text if text.strip() else sem.caption_original(image, image_name)
            info["caption"] = original
            message = original
            if srr:
                with torch.no_grad():
                    x_c = self.backbone.decode(latent.z_c)[..., :height, :width]
                info["reconstruction_caption"] = sem.caption_reconstruction(tensor_to_image(x_c))
                message = info["residual"] = sem.residual(original, info["reconstruction_caption"])
            ids = text_token_ids(self.backbone.tokenizer, message)
            if pfo and ids:
                from ..semantics.pfo import optimize_prompt

                run = optimize_prompt(self, image, latent.z_c, ids, sem.config.pfo, steps=steps, guidance=guidance,
                                      seed=seed, level=level)
                ids = run.tokens
                info["pfo"] = run.report()
        text_bytes = encode_ids(ids)
        header = Header(self.fingerprint, width, height, text_mode, steps, guidance, seed, level)
        data = pack(Container(header, text_bytes, latent.data))
        info["text"] = ids_to_text(self.backbone.tokenizer, ids)
        return EncodeResult(
            data, width, height, len(latent.data), len(text_bytes), latent.estimated_bits, time.perf_counter() - t0,
            text_mode, ids, info, used_level,
        )

    @torch.no_grad()
    def latent_of(self, image: Image.Image) -> torch.Tensor:
        """z_0 of an image: padded to the stride, VAE-encoded (the mode)."""
        x = image_to_tensor(image).to(self.device)
        return self.backbone.encode(pad_to_multiple(x, self.config.stride))

    def _warn_over_default_limits(self, steps: int | None, guidance: float | None) -> None:
        """A file the default decoder would refuse is legal, but its receiver must raise a limit."""
        import warnings

        rp = self.config.rate_point
        if steps is not None and steps > DEFAULT_LIMITS.steps_limit(rp):
            warnings.warn(f"steps={steps} is over the decoders' default limit of {DEFAULT_LIMITS.steps_limit(rp)}; "
                          f"decode the file with --max-steps {steps} (DecodeLimits(max_steps={steps}))", UserWarning,
                          stacklevel=3)
        if guidance is not None and guidance > DEFAULT_LIMITS.max_guidance:
            warnings.warn(f"guidance={guidance:g} is over the decoders' default limit of "
                          f"{DEFAULT_LIMITS.max_guidance:g}; decode the file with --max-guidance {guidance:g}",
                          UserWarning, stacklevel=3)

    def _default_semantics(self):
        if self.semantics is None:
            from ..semantics.pipeline import Semantics

            self.semantics = Semantics()
        return self.semantics

    def compress(self, image: Image.Image, **options) -> bytes:
        return self.encode(image, **options).data

    # -- decoding ------------------------------------------------------------------------------
    def check_model(self, header: Header) -> None:
        if not self.decodes(header.fingerprint):
            raise ModelMismatchError(
                f"file was made by model {header.fingerprint.hex()}, but this codec is model "
                f"{self.fingerprint.hex()} ({self.config.rate_point.name}); decode it with the model that made it"
            )

    def check_file(self, data: bytes, limits: DecodeLimits | None = None) -> FileSettings:
        """The file's container and its decoder settings (S, guidance, seed, rate level); refused
        before any work when it is malformed, made by another model, or over ``limits`` (the
        defaults when None)."""
        container = unpack(data)
        self.check_model(container.header)
        steps, guidance, seed = check_settings(container.header, self.config.rate_point, self.config.stride, limits)
        return FileSettings(container, steps, guidance, seed, container.header.level)

    def decode_text(self, container: Container, limits: DecodeLimits | None = None) -> list[int]:
        """The text section's token ids (none without text), checked against this model's vocabulary."""
        if not container.header.text_mode:
            return []
        ids = decode_ids(container.text, max_tokens=(limits or DEFAULT_LIMITS).max_text_tokens)
        if any(i >= len(self.backbone.tokenizer) or i in self._specials for i in ids):
            raise BitstreamError("text section holds tokens outside this model's vocabulary")
        return ids

    def decode_latent(self, container: Container) -> torch.Tensor:
        """z_c from the latent stream (the header's size gives the symbol count)."""
        header = container.header
        ph, pw = padded_size(header.height, header.width, self.config.stride)
        try:
            z_c = self.compressor.decompress(container.latent, (ph // VAE_FACTOR, pw // VAE_FACTOR),
                                             self.rate_position(header.level))
        except (RuntimeError, ValueError, IndexError, OverflowError) as exc:
            raise BitstreamError(f"latent stream is corrupt ({exc})") from None
        if not torch.isfinite(z_c).all():  # escaped symbols can be huge; the encoder never writes these
            raise BitstreamError("latent stream is corrupt (it decodes to non-finite values)")
        return z_c

    @torch.no_grad()
    def decode(self, data: bytes, sampler: Sampler = residual_ddim_sample,
               limits: DecodeLimits | None = None, one_pass: bool = False) -> DecodeResult:
        """Decode a file. ``limits`` bound the work a file may ask for (``DecodeLimits()`` when
        None), checked from the header first. ``one_pass`` decodes with one network evaluation
        whatever the file asks (``ONE_PASS``): faster, at some cost in quality. ``sampler`` is
        swappable for benchmarks (same signature as ``residual_ddim_sample``)."""
        t0 = time.perf_counter()
        container, steps, guidance, seed, level = self.check_file(data, limits)
        if one_pass:
            steps, guidance = ONE_PASS["steps"], ONE_PASS["guidance"]
        header = container.header
        ids = self.decode_text(container, limits)
        z_c = self.decode_latent(container)
        t1 = time.perf_counter()

        z, calls = self.sample(z_c, ids, steps, guidance, seed, sampler, level)
        t2 = time.perf_counter()
        x = self.backbone.decode(z)[..., : header.height, : header.width]
        image = tensor_to_image(x)
        t3 = time.perf_counter()
        evaluations = calls * (1 if guidance == 1 else 2)
        timings = {"entropy": t1 - t0, "diffusion": t2 - t1, "vae": t3 - t2}
        text = ids_to_text(self.backbone.tokenizer, ids)
        return DecodeResult(image, header, text, evaluations, t3 - t0, timings, ids)

    @torch.no_grad()
    def sample(
        self, z_c: torch.Tensor, ids: list[int], steps: int, guidance: float, seed: int,
        sampler: Sampler = residual_ddim_sample, level: int | None = None,
    ) -> tuple[torch.Tensor, int]:
        """The decoder's final latent from z_c and the text's token ids, and the number of
        sampler calls (``level``: the file's rate level, which sets a variable-rate model's
        N_r). Pfo's selection decodes through here too, so it scores what the receiver will see."""
        denoise = CallCounter(self._denoiser(z_c, ids, guidance, self.applies_control(level)))
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(z_c.shape, generator=generator, dtype=z_c.dtype).to(self.device)
        return sampler(self.schedule_for(level), denoise, z_c, noise, steps, generator=generator), denoise.calls

    def settings(self, steps: int | None, guidance: float | None, seed: int | None) -> tuple[int, float, int]:
        """(S, guidance, seed) with the rate point's values where None."""
        rp = self.config.rate_point
        return (steps if steps is not None else rp.sampling_steps,
                guidance if guidance is not None else rp.guidance,
                seed if seed is not None else rp.seed)

    def decompress(self, data: bytes, limits: DecodeLimits | None = None, one_pass: bool = False) -> Image.Image:
        return self.decode(data, limits=limits, one_pass=one_pass).image

    def _denoiser(self, z_c: torch.Tensor, ids: list[int], guidance: float, apply_control: bool = True):
        """eps(z_t, t) for this file: the positive prompt is the text's token ids + the quality
        suffix (``prompt_input_ids``), the negative prompt the fixed one."""
        if self.encode_only:
            raise ModelLoadError(f"model {self.fingerprint.hex()} was loaded to encode only (no diffusion prior or "
                                 "control module): load it with encode_only=False to decode or to refine prompts")
        positive = self.backbone.encode_ids(prompt_input_ids(self.backbone.tokenizer, ids))
        negative = None if guidance == 1 else self.backbone.encode_text([NEGATIVE_PROMPT])
        return guided_denoiser(self.cdm, z_c, positive, negative, guidance, apply_control)


def guided_denoiser(cdm: torch.nn.Module, z_c: torch.Tensor, positive: torch.Tensor,
                    negative: torch.Tensor | None, guidance: float, apply_control: bool = True):
    """eps(z_t, t) with classifier-free guidance, eps_u + w (eps_c - eps_u), both branches in one
    batch (negative rows first). With guidance 1 only the positive branch runs. ``apply_control``
    False: the prior alone (ControlNet-XS adds nothing to the base UNet)."""
    if guidance == 1:
        context, cond = positive, z_c
    else:
        context, cond = torch.cat([negative, positive]), torch.cat([z_c, z_c])
    switch = {} if apply_control else {"apply_control": False}

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        xin = x if guidance == 1 else torch.cat([x, x])
        ts = torch.full((xin.shape[0],), t, device=x.device, dtype=torch.long)
        eps = cdm(xin, ts, encoder_hidden_states=context, controlnet_cond=cond, **switch).sample
        if guidance == 1:
            return eps
        eps_u, eps_c = eps.chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    return denoise
