"""How much work one file may ask of the decoder, checked from its header before any work.

A ResULIC file is tiny and its header chooses the decoder's cost: the image size (every pixel
goes through the control UNet's S steps and the VAE), the number of DDIM steps S, and the
guidance scale; the text section's token count bounds the text decoder. Without limits a 40-byte
file can hold a decoder for minutes. ``DecodeLimits`` bounds each; the library and the CLI use
generous defaults, Serve much smaller ones (``resulic.serving.limits.ServeLimits``). docs/security.md
lists what each costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MAX_TEXT_TOKENS, RatePointConfig
from ..errors import DecodeLimitError
from ..images import padded_size
from .container import Header

# Default ceiling on S as a multiple of the rate point's own S: room to trade time for quality,
# not a 100x slower decode of a 40-byte file.
STEPS_FACTOR = 4


@dataclass(frozen=True)
class DecodeLimits:
    """Limits on what one file may make the decoder do."""

    max_pixels: int = 16_000_000  # of the image padded to the 128-px stride: what is computed
    max_steps: int | None = None  # DDIM steps S; None: STEPS_FACTOR x the rate point's S
    max_guidance: float = 20.0  # classifier-free guidance scale (rate points use 1..~7)
    max_text_tokens: int = MAX_TEXT_TOKENS  # the encoder never writes more (CLIP's 77 - 2)

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("max_pixels and max_steps must be at least 1")
        if self.max_guidance < 0 or self.max_text_tokens < 0:
            raise ValueError("max_guidance and max_text_tokens must be non-negative")

    def steps_limit(self, rate_point: RatePointConfig) -> int:
        return self.max_steps if self.max_steps is not None else STEPS_FACTOR * rate_point.sampling_steps

    def check_header(self, header: Header, stride: int) -> None:
        """The checks that need no model: the size, and the steps and guidance a header states
        (a rate point's own values are checked by ``check``). Serve's ingress runs these."""
        ph, pw = padded_size(header.height, header.width, stride)
        if ph * pw > self.max_pixels:
            raise DecodeLimitError(
                f"the file is a {header.width}x{header.height} image ({pw}x{ph} = {ph * pw:,} pixels to decode "
                f"after padding to {stride}), over the limit of {self.max_pixels:,}", "max_pixels",
            )
        if header.steps is not None and self.max_steps is not None and header.steps > self.max_steps:
            raise DecodeLimitError(f"the file asks for {header.steps} diffusion steps, over the limit of "
                                   f"{self.max_steps}", "max_steps")
        if header.guidance is not None and header.guidance > self.max_guidance:
            raise DecodeLimitError(
                f"the file asks for guidance {header.guidance:g}, over the limit of {self.max_guidance:g}", "max_guidance"
            )

    def check(self, header: Header, rate_point: RatePointConfig, stride: int) -> tuple[int, float]:
        """Refuse (DecodeLimitError) a header over any limit; returns the (S, guidance) it asks for."""
        self.check_header(header, stride)
        steps = header.steps if header.steps is not None else rate_point.sampling_steps
        if steps > self.steps_limit(rate_point):
            raise DecodeLimitError(
                f"the file asks for {steps} diffusion steps, over the limit of {self.steps_limit(rate_point)}"
                + ("" if self.max_steps is not None else
                   f" ({STEPS_FACTOR} x the rate point's {rate_point.sampling_steps})"), "max_steps",
            )
        guidance = header.guidance if header.guidance is not None else rate_point.guidance
        if guidance > self.max_guidance:
            raise DecodeLimitError(
                f"the model's rate point decodes with guidance {guidance:g}, over the limit of {self.max_guidance:g}",
                "max_guidance",
            )
        return steps, guidance


DEFAULT_LIMITS = DecodeLimits()


def check_settings(header: Header, rate_point: RatePointConfig, stride: int,
                   limits: DecodeLimits | None = None) -> tuple[int, float, int]:
    """(S, guidance, seed) a header asks of a model with this rate point, refused when over
    ``limits`` or the model's N_r. Needs the model's config only, not its weights: Serve's ingress
    runs it before a file queues for a codec replica (``Codec.check_file`` runs it too)."""
    from ..errors import BitstreamError

    if header.level is not None and rate_point.variable is None:
        raise BitstreamError("the file states a rate level, but its model has a fixed rate")
    steps, guidance = (limits or DEFAULT_LIMITS).check(header, rate_point, stride)
    n_r = rate_point.residual_steps_for(header.level)
    if steps > n_r:
        raise BitstreamError(f"steps = {steps} exceeds this model's N_r = {n_r}")
    return steps, guidance, header.seed if header.seed is not None else rate_point.seed
