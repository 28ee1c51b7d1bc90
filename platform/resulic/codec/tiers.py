"""Two trained variable-rate models behind one rate level (``rate_point.low_tier``).

A model trained for the lowest rates (a nonlinear compressor: round 8 of docs/small-profile.md)
and one for the rest (the KLT-started compressor) are each the better codec over part of the
range. ``assemble`` puts them into one codec: the low one codes the model's lowest levels, the
main one the others, both decoded through the main model's control module and prior. The result
is an ordinary trained-codec folder — one fingerprint, levels 0..127, rate control, Serve — and
each tier codes exactly the bits its own model codes (its weights, entropy model and gains are
copied whole). No Ray, no MLflow.
"""

from __future__ import annotations

from ..config import LowTierConfig
from ..errors import ModelLoadError
from ..models.compressor import LatentCompressor, TieredCompressor
from .codec import Codec


def with_residual_steps(codec: Codec, residual_steps: list[int] | None) -> Codec:
    """The same trained model decoded with other N_r at its anchors (a decoder setting: its
    bitstreams are the same, its fingerprint is not)."""
    if residual_steps is None:
        return codec
    variable = codec.config.rate_point.variable
    if variable is None:
        raise ModelLoadError("residual steps per anchor: the model has a fixed rate")
    config = codec.config.model_copy(deep=True)
    config.rate_point.variable = variable.model_copy(update={"residual_steps": list(residual_steps)})
    config = type(config).model_validate(config.model_dump(mode="json"))  # checked like a loaded config
    return Codec(config, codec.backbone, codec.compressor, codec.cdm, codec.device)


def assemble(main: Codec, low: Codec, *, levels: int, own_levels: tuple[int, int], main_from: int,
             default_level: int | None = None, control: str = "main", low_control: str = "shared") -> Codec:
    """One codec: ``low``'s own levels ``own_levels`` as the model's levels 0..levels-1, ``main``'s
    own levels main_from..127 as the rest; ``main``'s prior and decoder settings, and the control
    module of ``control`` ("main" or "low") for both: a model whose control module never trained
    (zero links: the prior alone) keeps decoding exactly as it did when it is the one chosen.
    ``low_control`` "none": the low tier decodes with the prior alone whatever the control module."""
    if control not in ("main", "low"):
        raise ModelLoadError(f"control: 'main' or 'low', not {control!r}")
    for name, codec in (("main", main), ("low", low)):
        if not isinstance(codec.compressor, LatentCompressor) or codec.config.rate_point.variable is None:
            raise ModelLoadError(f"{name}: a single variable-rate model is needed (rate levels), "
                                 f"not {'a fixed-rate' if codec.config.rate_point.variable is None else 'a tiered'} one")
    if low.backbone.identity != main.backbone.identity:
        raise ModelLoadError("low and main are built on different backbones: their latents would not match")
    tier = LowTierConfig(levels=levels, own_levels=list(own_levels), main_from=main_from,
                         compressor=low.config.compressor, variable=low.config.rate_point.variable,
                         control=low_control)
    source = main if control == "main" else low
    config = main.config.model_copy(deep=True)
    if control == "low":
        config.control = low.config.control.model_copy()
    config.rate_point.low_tier = tier
    if default_level is not None:
        config.rate_point.variable.default_level = default_level
    config = type(config).model_validate(config.model_dump(mode="json"))  # checks the default level too
    return Codec(config, main.backbone, TieredCompressor(main.compressor, low.compressor), source.cdm, main.device)


def split(codec: Codec) -> tuple[Codec, Codec]:
    """The two models a tiered codec was assembled from, each a whole variable-rate model again:
    ``(main, low)``, each with its own compressor, anchors and levels (so each codes exactly the
    bits it coded inside the tiered one), the tiered codec's prior and control module. A tier is
    trained on from here (``init_from``) and assembled again with ``assemble``. A low tier decoded
    with the prior alone (``low_tier.control`` "none") comes back with that control module: the
    same bits, decoded through it (assemble it again with ``low_control="none"``)."""
    tier = codec.config.rate_point.low_tier
    if tier is None or not isinstance(codec.compressor, TieredCompressor):
        raise ModelLoadError("split: the model has one compressor (no rate_point.low_tier)")
    main_data = codec.config.model_dump(mode="json")
    main_data["rate_point"].pop("low_tier")
    low_data = {**main_data, "compressor": tier.compressor.model_dump(mode="json"),
                "rate_point": {**main_data["rate_point"], "variable": tier.variable.model_dump(mode="json")}}
    built = []
    for data, compressor in ((main_data, codec.compressor.main), (low_data, codec.compressor.low)):
        config = type(codec.config).model_validate(data)  # checked like a loaded config
        built.append(Codec(config, codec.backbone, compressor, codec.cdm, codec.device))
    return built[0], built[1]
