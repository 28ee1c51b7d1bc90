"""Typed configuration: pydantic schemas, YAML loading and dotted ``--set key=value`` overrides.

Every schema forbids unknown keys, so a typo is an error that names the key and the file
instead of a setting silently ignored. The defaults of :class:`ModelConfig` are the embedded
``tiny`` profile; ``configs/model/*.yaml`` hold the named profiles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import ConfigError

# The prompt text the decoder wraps around the transmitted caption (RESULIC.md §3.6).
QUALITY_SUFFIX = "best quality, extremely detailed"
# CLIP's context: the text encoder's token positions, start and end tokens included. Here, not
# in models/, so that checking a file's header (Serve's ingress) imports no torch.
TEXT_LENGTH = 77
MAX_TEXT_TOKENS = TEXT_LENGTH - 2  # the text section's tokens: start and end take two positions
NEGATIVE_PROMPT = (
    "oil painting, cartoon, blurring, dirty, messy, low quality, frames, deformed, lowres, "
    "over-smooth."
)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackboneConfig(StrictModel):
    """The frozen Stable Diffusion parts (VAE, UNet, text encoder, tokenizer)."""

    profile: Literal["tiny", "small", "sd21"] = "tiny"
    # sd21: a Hugging Face hub id or a local folder in diffusers layout (vae/, unet/,
    # text_encoder/, tokenizer/). small: the diffusion prior — 'bundled' (shipped), a stage-0
    # run's model folder (holding unet/), or 'random' (seeded, where stage 0 starts).
    # Ignored by the tiny profile.
    source: str = "stabilityai/stable-diffusion-2-1-base"
    revision: str | None = None
    # tiny: seed of the random weights, so that every machine builds the same model; small: of
    # the text encoder (and of the prior with source 'random').
    seed: int = 0


# Widths a config may ask for. A codec folder's config.yaml chooses how much memory the loader
# allocates before any weight is compared with it; 1024 is 5x the sd21 profile's widest layer and
# bounds one 5x5 convolution at 100 MB (docs/security.md).
MAX_WIDTH = 1024
MAX_GROUPS = 16


class CompressorConfig(StrictModel):
    """The ELIC-style latent codec (RESULIC.md §2). Defaults are the tiny profile's sizes."""

    latent_channels: int = Field(4, gt=0, le=MAX_WIDTH)
    channels: int = Field(32, gt=0, le=MAX_WIDTH, description="N: width of g_a/g_s and of the hyper-latent z")
    latent_dim: int = Field(48, gt=0, le=MAX_WIDTH, description="M: channels of y")
    groups: list[int] = Field(default_factory=lambda: [4, 4, 8, 8, 24])
    channel_context: list[int] = Field(default_factory=lambda: [32, 32])
    # Variable rate (one model for every rate): gain vectors on y's channels at this many
    # anchors, interpolated between them (0 = a fixed-rate compressor). rate_point.variable
    # gives each anchor its λ_R and N_r.
    gain_anchors: int = Field(0, ge=0, le=64)
    # A linear path beside g_a and g_s: y also gets a 4x4-patch projection of z_0 and z_c a 4x4
    # back-projection of ŷ, both started from the KLT (principal components) of training latents
    # while the nonlinear branches start at zero, so training begins at a transform coder
    # instead of at noise (docs/small-profile.md, round 5).
    linear_transform: bool = False
    # The entropy model's parameters (each symbol's scale and mean) computed in exact integer
    # arithmetic when coding, so a file decodes the same on every kernel, thread count and
    # device (entropy/exact.py); off only in models released before it.
    exact_entropy_parameters: bool = False
    seed: int = 1

    @model_serializer(mode="wrap")
    def _omit_defaults_of_older_models(self, handler: SerializerFunctionWrapHandler) -> dict:
        # Left out at their defaults, so the configs and fingerprints of earlier models stay the same.
        data = handler(self)
        if isinstance(data, dict):
            if data.get("gain_anchors", 1) == 0:
                data.pop("gain_anchors")
            for flag in ("linear_transform", "exact_entropy_parameters"):
                if data.get(flag) is False:
                    data.pop(flag)
        return data

    @field_validator("gain_anchors")
    @classmethod
    def _anchors_pair(cls, anchors: int) -> int:
        if anchors == 1:
            raise ValueError("a variable-rate compressor needs at least 2 anchors (0 = fixed rate)")
        return anchors

    @field_validator("groups")
    @classmethod
    def _groups_sum_to_latent_dim(cls, groups: list[int], info: ValidationInfo) -> list[int]:
        if not groups or len(groups) > MAX_GROUPS or any(g <= 0 for g in groups):
            raise ValueError(f"must be a list of 1..{MAX_GROUPS} positive channel counts")
        latent_dim = info.data.get("latent_dim")
        if latent_dim is not None and sum(groups) != latent_dim:
            raise ValueError(f"{groups} sum to {sum(groups)}, but latent_dim is {latent_dim}")
        return groups

    @field_validator("channel_context")
    @classmethod
    def _two_widths(cls, widths: list[int]) -> list[int]:
        if len(widths) != 2 or any(not 0 < c <= MAX_WIDTH for c in widths):
            raise ValueError(f"must be two widths in 1..{MAX_WIDTH}, e.g. [224, 128]")
        return widths


class ControlConfig(StrictModel):
    """The ControlNet-XS-style control module fed by z_c (RESULIC.md §3.5)."""

    size_ratio: float = Field(0.25, gt=0, le=1)
    conditioning_channels: int = Field(16, gt=0, le=MAX_WIDTH, description="width of the z_c embedding")
    seed: int = 2


# A variable-rate model's rate knob is a level 0..RATE_LEVELS (one varint byte in the file):
# level / RATE_LEVELS runs along the anchors, from the first (lowest rate) to the last.
RATE_LEVELS = 127
# The decoder's seed is a 32-bit unsigned integer: the file stores it as a varint the reader
# bounds to this, so a config or a command line may not ask for more (it would write a file no
# decoder reads back).
MAX_SEED = 2**32 - 1


class VariableRateConfig(StrictModel):
    """One model for a range of rates: λ_R and N_r at each of the compressor's gain anchors
    (lowest rate first); a level between anchors interpolates both."""

    lambda_rates: list[float] = Field(description="λ_R at each anchor, decreasing (the first is the lowest rate)")
    residual_steps: list[int] = Field(description="N_r at each anchor; a level between anchors rounds the interpolation")
    default_level: int = Field(RATE_LEVELS // 2, ge=0, le=RATE_LEVELS, description="the level files use unless told")

    @field_validator("lambda_rates")
    @classmethod
    def _decreasing(cls, lambdas: list[float]) -> list[float]:
        if len(lambdas) < 2 or any(x <= 0 for x in lambdas):
            raise ValueError("must be at least 2 positive λ_R values")
        if any(b >= a for a, b in zip(lambdas, lambdas[1:])):
            raise ValueError(f"{lambdas} must decrease (the first anchor is the lowest rate)")
        return lambdas

    @field_validator("residual_steps")
    @classmethod
    def _one_per_anchor(cls, steps: list[int], info: ValidationInfo) -> list[int]:
        lambdas = info.data.get("lambda_rates")
        if lambdas is not None and len(steps) != len(lambdas):
            raise ValueError(f"{len(steps)} values for {len(lambdas)} anchors (lambda_rates)")
        if any(not 1 <= n <= 999 for n in steps):
            raise ValueError("each N_r must be in 1..999")
        return steps

    @property
    def anchors(self) -> int:
        return len(self.lambda_rates)

    def position(self, level: int) -> float:
        """Where ``level`` falls along the anchors: 0 .. anchors - 1."""
        if not 0 <= level <= RATE_LEVELS:
            raise ValueError(f"rate level {level} is outside 0..{RATE_LEVELS}")
        return level / RATE_LEVELS * (self.anchors - 1)

    def _interpolate(self, values: list[float], position: float) -> float:
        k = min(int(position), self.anchors - 2)
        f = position - k
        return (1 - f) * values[k] + f * values[k + 1]

    def lambda_at(self, position: float) -> float:
        """λ_R at a position (geometric interpolation: the anchors are spaced in log λ)."""
        import math

        return math.exp(self._interpolate([math.log(x) for x in self.lambda_rates], position))

    def residual_steps_at(self, level: int) -> int:
        return self.residual_steps_at_position(self.position(level))

    def residual_steps_at_position(self, position: float) -> int:
        """N_r at a position along the anchors (training draws positions, files carry levels)."""
        return int(round(self._interpolate([float(n) for n in self.residual_steps], position)))


class LowTierConfig(StrictModel):
    """The lowest rate levels of a variable-rate model, coded by a second compressor that is the
    better one there (docs/variable-rate.md, "Two compressors, one rate level"). The model's levels
    0 .. levels - 1 span this compressor's own levels ``own_levels`` (linearly); the model's levels
    from ``levels`` to 127 span the main compressor's own levels ``main_from`` .. 127. A file
    carries the model's level and fingerprint like any other; the decoder routes it by level.
    Assembled from two trained models (``jobs/release_small.py tiered``), never trained as one."""

    levels: int = Field(ge=1, le=RATE_LEVELS - 1, description="how many of the lowest levels this compressor codes")
    own_levels: list[int] = Field(description="[first, last]: its own levels that those levels span")
    main_from: int = Field(0, ge=0, le=RATE_LEVELS - 1, description="the main compressor's own level at the model's level `levels`")
    compressor: CompressorConfig
    variable: VariableRateConfig = Field(description="its own anchors' λ_R and N_r (default_level unused)")
    # The control module trained on one tier's latents need not help the other's: "none" decodes
    # this tier's levels with the prior alone (the control module's links off), exactly as a model
    # whose control module never trained (zero links) decodes.
    control: Literal["shared", "none"] = Field(
        "shared", description="'shared': the model's control module steers this tier's decode too; 'none': the prior alone")

    @model_serializer(mode="wrap")
    def _omit_shared_control(self, handler: SerializerFunctionWrapHandler) -> dict:
        # Left out at its default, so the config and fingerprint of the tiered model released
        # before the field existed (round 10, 1c4f4dda) stay the same.
        data = handler(self)
        if isinstance(data, dict) and data.get("control") == "shared":
            data.pop("control")
        return data

    @field_validator("own_levels")
    @classmethod
    def _a_range(cls, levels: list[int]) -> list[int]:
        if len(levels) != 2 or not 0 <= levels[0] <= levels[1] <= RATE_LEVELS:
            raise ValueError(f"must be [first, last] with 0 <= first <= last <= {RATE_LEVELS}")
        return levels

    @model_validator(mode="after")
    def _anchors_match(self):
        if self.compressor.gain_anchors != self.variable.anchors:
            raise ValueError(f"variable: the low tier's compressor has {self.compressor.gain_anchors} gain anchors, "
                             f"its variable gives {self.variable.anchors}")
        return self


class Route(NamedTuple):
    """Where a variable-rate model's level is coded: which compressor (``low`` tier or ``main``),
    at which position along that compressor's gain anchors, decoded with which N_r."""

    tier: str
    position: float
    residual_steps: int
    control: bool = True  # False: the prior alone decodes this level (low_tier.control "none")


class RatePointConfig(StrictModel):
    """One trained rate point: its rate weight and the decoder settings it implies. A
    variable-rate model (``variable``) covers a range: its N_r follows the file's rate level
    and ``residual_steps`` / ``lambda_rate`` are unused."""

    name: str = "r300"
    lambda_rate: float = Field(6.0, gt=0, description="λ_R used in training")
    residual_steps: int = Field(300, ge=1, le=999, description="N_r")
    sampling_steps: int = Field(3, ge=1, description="S, DDIM steps")
    guidance: float = Field(2.5, ge=0, description="classifier-free guidance scale")
    gamma: Literal["constant", "time_varying"] = "constant"
    seed: int = Field(42, ge=0, le=MAX_SEED, description="seed of the decoder's starting noise (0..2^32 - 1)")
    eta: float | None = Field(
        None, ge=0, le=1,
        description="DDIM η of the decoder; null = the γ variant's own (0 constant, 1 time_varying)",
    )
    variable: VariableRateConfig | None = None
    low_tier: LowTierConfig | None = None

    @field_validator("sampling_steps")
    @classmethod
    def _steps_fit(cls, steps: int, info: ValidationInfo) -> int:
        n_r = info.data.get("residual_steps")
        if n_r is not None and steps > n_r:
            raise ValueError(f"{steps} exceeds residual_steps ({n_r})")
        return steps

    @model_validator(mode="after")
    def _eta_fits_gamma(self):
        # The time-varying variant's forward process is the DDPM chain: only the η = 1 step
        # lands on its marginals (RESULIC.md §3.4); any other η decodes off the training path.
        if self.gamma == "time_varying" and self.eta is not None and self.eta != 1:
            raise ValueError(f"eta: {self.eta} does not fit gamma 'time_varying', which needs η = 1 "
                             "(RESULIC.md §3.4); leave eta unset or set it to 1")
        return self

    @property
    def resolved_eta(self) -> float:
        """The η the decoder steps with: the set one, else the γ variant's own."""
        if self.eta is not None:
            return float(self.eta)
        return 1.0 if self.gamma == "time_varying" else 0.0

    @model_serializer(mode="wrap")
    def _omit_unset_eta(self, handler: SerializerFunctionWrapHandler) -> dict:
        # An unset η is left out of every dump, so configs, fingerprints and run hashes made
        # before η was a field stay the same. A set η is kept, even at its variant's value, so
        # that it survives a round trip (and a later change of γ cannot silently drop it).
        data = handler(self)
        if isinstance(data, dict) and data.get("eta", 0) is None:
            data.pop("eta")
        for key in ("variable", "low_tier"):  # likewise for fixed-rate and single-compressor models
            if isinstance(data, dict) and key in data and data[key] is None:
                data.pop(key)
        return data

    @model_validator(mode="after")
    def _variable_steps_fit(self):
        if self.variable is not None and min(self.variable.residual_steps) < self.sampling_steps:
            raise ValueError(f"variable.residual_steps: {min(self.variable.residual_steps)} is below "
                             f"sampling_steps ({self.sampling_steps})")
        if self.low_tier is not None:
            if self.variable is None:
                raise ValueError("low_tier: only a variable-rate model (rate_point.variable) has rate levels to share")
            if min(self.low_tier.variable.residual_steps) < self.sampling_steps:
                raise ValueError(f"low_tier.variable.residual_steps: {min(self.low_tier.variable.residual_steps)} is "
                                 f"below sampling_steps ({self.sampling_steps})")
        return self

    @property
    def max_residual_steps(self) -> int:
        """The largest N_r any file of this model decodes with."""
        if self.variable is None:
            return self.residual_steps
        return max(self.variable.residual_steps + (self.low_tier.variable.residual_steps if self.low_tier else []))

    def route(self, level: int | None) -> Route:
        """Where a variable-rate model codes ``level`` (None: its default level)."""
        variable, tier = self.variable, self.low_tier
        if variable is None:
            raise ValueError("this model has a fixed rate: a rate level (or a bpp target) needs a variable-rate model")
        level = variable.default_level if level is None else level
        if not 0 <= level <= RATE_LEVELS:
            raise ValueError(f"rate level {level} is outside 0..{RATE_LEVELS}")
        if tier is None:
            own, name = float(level), "main"
        elif level < tier.levels:
            first, last = tier.own_levels
            own, variable, name = first + (last - first) * level / max(1, tier.levels - 1), tier.variable, "low"
        else:
            own = tier.main_from + (RATE_LEVELS - tier.main_from) * (level - tier.levels) / (RATE_LEVELS - tier.levels)
            name = "main"
        position = own / RATE_LEVELS * (variable.anchors - 1)
        control = name == "main" or tier.control == "shared"
        return Route(name, position, variable.residual_steps_at_position(position), control)

    def residual_steps_for(self, level: int | None) -> int:
        """N_r of a file at ``level`` (None: the default level; fixed-rate models: their N_r)."""
        if self.variable is None:
            return self.residual_steps
        return self.route(level).residual_steps


class ModelConfig(StrictModel):
    """Everything that defines a codec. The defaults are the embedded ``tiny`` profile."""

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    compressor: CompressorConfig = Field(default_factory=CompressorConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    rate_point: RatePointConfig = Field(default_factory=RatePointConfig)
    # The image is padded to a multiple of this many pixels: VAE (8) x g_a (4) x h_a (4).
    stride: int = 128

    @field_validator("stride")
    @classmethod
    def _stride_is_128(cls, v: int) -> int:
        if v != 128:
            raise ValueError("stride is fixed by the architecture at 128 (VAE 8 x g_a 4 x h_a 4)")
        return v

    @model_validator(mode="after")
    def _rate_knob_matches(self):
        anchors = self.compressor.gain_anchors
        variable = self.rate_point.variable
        if anchors and (variable is None or variable.anchors != anchors):
            raise ValueError(f"rate_point.variable: the compressor has {anchors} gain anchors; give lambda_rates "
                             f"and residual_steps for each ({0 if variable is None else variable.anchors} given)")
        if variable is not None and not anchors:
            raise ValueError("compressor.gain_anchors: a variable-rate rate point needs a variable-rate compressor "
                             f"(gain_anchors: {variable.anchors})")
        return self

    @property
    def variable_rate(self) -> bool:
        return self.rate_point.variable is not None

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class EndpointConfig(StrictModel):
    """Where a model for captions or residuals lives (RESULIC.md §0 item 7)."""

    # none: no model; transformers: a local transformers model (hub id in the cache, or a folder)
    # in ``source``; openai: an OpenAI-compatible chat endpoint at ``base_url`` serving ``source``.
    kind: Literal["none", "transformers", "openai"] = "none"
    source: str | None = None
    base_url: str | None = None
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable that holds the API key")
    max_tokens: int = Field(77, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    device: str = "cpu"

    @model_validator(mode="after")
    def _complete(self):
        if self.kind in ("transformers", "openai") and not self.source:
            raise ValueError(f"source: a model (hub id, folder or endpoint model name) is required for kind {self.kind!r}")
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url: required for kind 'openai' (e.g. http://127.0.0.1:8000/v1)")
        return self


class ResidualConfig(EndpointConfig):
    """Semantic residual extraction: ``kind`` none means the offline phrase matcher."""

    # The offline matcher: 'embedding' (all-MiniLM-L6-v2 sentence embeddings) or 'lexical'.
    matcher: Literal["embedding", "lexical"] = "embedding"
    threshold: float = Field(0.78, gt=0, le=1, description="similarity at which a phrase counts as present")


class PfoConfig(StrictModel):
    """Prompt fidelity optimisation (RESULIC.md §6), bounded by iterations and seconds."""

    iterations: int = Field(500, ge=1)
    time_budget_s: float = Field(300.0, ge=0, description="the loop stops after the first iteration past it")
    eval_every: int = Field(50, ge=1, description="K: full decode and selection every K iterations")
    lr: float = Field(0.1, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    diffusion_weight: float = Field(1.0, ge=0)
    clip_weight: float = Field(0.1, ge=0)
    clip_model: str | None = Field(None, description="a transformers CLIPModel (folder or cached hub id)")
    metric: Literal["psnr", "lpips", "lpips-random"] = "psnr"
    noise_draws: int = Field(0, ge=0, description="0: a fresh (n, eps) every iteration; k: cycle k fixed draws")
    progress: bool = True


class SemanticsConfig(StrictModel):
    """Captions, semantic residual and Pfo on the encoder side; the decoder needs none of it."""

    captioner: EndpointConfig = Field(default_factory=EndpointConfig)
    captions_file: str | None = Field(None, description="JSONL {image, caption}: captions of originals by file name")
    cache_dir: str | None = Field(None, description="cache of original-image captions by content hash")
    residual: ResidualConfig = Field(default_factory=ResidualConfig)
    pfo: PfoConfig = Field(default_factory=PfoConfig)


class MainTrainingConfig(StrictModel):
    """The short training the main job runs first (null stage configs = no training)."""

    stage1: str | None = Field("configs/train/stage1.yaml", description="stage-1 training YAML")
    stage2: str | None = Field("configs/train/stage2.yaml", description="stage-2 training YAML (needs stage1)")
    overrides: list[str] = Field(default_factory=list, description="--set overrides for both stages")


class MainJobConfig(StrictModel):
    """``jobs/main.py``: the platform loop on the embedded defaults — a small sweep (each trial
    trains stage 1 then stage 2), promotion of the best trial to champion, then a round trip of
    sample images through real files with the champion."""

    sweep: str | None = Field("configs/sweep/small-finetune.yaml", description="sweep YAML; null = train with `train`")
    promote: str = Field("configs/promote/small.yaml", description="promotion YAML (after the sweep; one rate band)")
    heldout: str = Field("heldout", description="the files the sweep's best trial must win on: 'heldout' "
                         "(scikit-learn's photos, not in the sweep's data) or an image folder")
    train: MainTrainingConfig = Field(default_factory=MainTrainingConfig)
    model: str | None = Field(
        None, description="a trained-codec folder, models:/ URI or model YAML; none = what the loop made"
    )
    images: str = Field("samples", description="an image folder, or 'samples' for scikit-image's photos")
    max_images: int = Field(4, ge=1)
    max_side: int = Field(512, ge=16, description="downscale larger images so the demo stays quick")
    output_dir: str = "outputs/main"
    serve: bool = Field(True, description="finally serve the model on 127.0.0.1 (Ray Serve) and round-trip "
                        "the images over HTTP into <output_dir>/served")


# --------------------------------------------------------------------------------------------
# Loading

T = TypeVar("T", bound=BaseModel)


def parse_overrides(overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML scalars (``3``, ``0.5``, ``[1,2]``)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key.path=value")
        try:
            value = parse_yaml(raw, "value") if raw.strip() else ""
        except ConfigError as exc:
            raise ConfigError(f"override {item!r}: {str(exc).removeprefix('value: ')}") from None
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for path, value in parse_overrides(overrides):
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if isinstance(child, str) and child.endswith((".yaml", ".yml")) and Path(child).is_file():
                # A section given as a YAML file (``model: configs/model/small.yaml``) is read in,
                # so ``--set model.rate_point.residual_steps=100`` reaches into it.
                child = node[part] = read_yaml(child)
            if not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(path)}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")  # our validators' messages stand alone
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        key = ".".join(str(p) for p in err["loc"])
        # A whole-object rule names its own key in the message, after the object's path.
        lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return "; ".join(lines)  # one line, however many keys are wrong: errors are one line on stderr


# A config file is a few KiB (the project's largest is 2 KiB, a codec folder's config.yaml 0.4 KiB
# and capped at 16 KiB by codec/store.py); the cap bounds a hostile file's parsing at a few
# seconds (7 s for 256 KiB of nested mappings on a busy 2-core machine). YAML nesting deeper than
# this is no config.
MAX_YAML_BYTES = 256 << 10
MAX_YAML_DEPTH = 32


# libyaml (C) when PyYAML has it: the pure-Python loader took 45 s for 1 MiB of small items on a
# busy 2-core machine, libyaml about a second.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SafeYamlLoader(_BaseLoader):
    """``yaml.SafeLoader`` (no Python objects; libyaml's when available) whose documents have been
    checked by ``_check_events`` first, and whose constructors keep configs JSON-like."""


def _refuse_tag(loader, node):
    raise yaml.MarkedYAMLError(problem=f"the tag {node.tag} is not allowed", problem_mark=node.start_mark)


# Configs are JSON-like data: bytes, sets and ordered pairs are refused (they are no config value
# and broke the code after the loader), a date is kept as the text it was written as.
for _tag in ("binary", "set", "omap", "pairs"):
    _SafeYamlLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_SafeYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)


def _check_events(text: str) -> None:
    """Refuse anchors and aliases, and nesting deeper than MAX_YAML_DEPTH, from the parser's
    events, before any node is built: a 900-byte "billion laughs" document expands aliases to
    ~10^9 nodes and held the loader for minutes, and PyYAML's composer is recursive (50,000 '['
    ended in a RecursionError). No config needs either, so they are refused, not bounded."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(problem="anchors and aliases (&, *) are not allowed", problem_mark=event.start_mark)
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise yaml.MarkedYAMLError(problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                                           problem_mark=event.start_mark)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message (several lines, with a context snippet) as one line."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(str(problem).split()) + where


def parse_yaml(text: str, source: str):
    """``text`` parsed by the safe loader above; any problem is a one-line ConfigError naming
    ``source``. For every YAML the project reads: configs, codec folders, --set values."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters of YAML, over the limit of {MAX_YAML_BYTES:,}")
    try:
        _check_events(text)
        return yaml.load(text, Loader=_SafeYamlLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:  # flow-style nesting is parsed recursively before compose_node sees it
        raise ConfigError(f"{source}: not valid YAML (nested deeper than {MAX_YAML_DEPTH} levels)") from None


def yaml_mapping(text: str, source: str) -> dict:
    """A config document: a mapping (an empty document is ``{}``)."""
    data = parse_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: over the limit of {MAX_YAML_BYTES:,} bytes for a config file")
    return yaml_mapping(text, str(path))


def build_config(schema: type[T], data: dict, overrides: Sequence[str] = (), source: str = "<config>") -> T:
    data = apply_overrides(data, overrides)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        where = source if not overrides else f"{source} (with --set {' '.join(overrides)})"
        raise ConfigError(_describe(exc, where)) from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (or the schema's embedded defaults when None) and apply overrides."""
    data = read_yaml(path) if path is not None else {}
    return build_config(schema, data, overrides, source=str(path) if path else "<defaults>")
