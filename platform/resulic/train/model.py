"""The trained parts and their losses (RESULIC.md §4), as one ``nn.Module`` whose ``forward``
returns every loss term, so that one DDP wrapper covers everything that learns.

Stage 1:  L1 = ||eps - eps_theta(z_n, n, z_c, c)||² + λ_R·R + λ_g·||z_c - z_0||²
              [+ λ_x·||VAE-Dec(z_c) - x||² + λ_f·F(VAE-Dec(z_c), x)]  (F: EfficientNet-Lite0 features)
Stage 2:  L2 = L1 + λ_d·MSE(x̂, x) + λ_p·LPIPS(x̂, x) [+ λ_adv·hinge-GAN], x̂ = VAE-Dec(x̂_0)

with n ~ U{0..N_r}, z_n from the residual forward process, R the estimated bits per pixel of
y and z, and x̂, x in [-1, 1] given the same random shift-and-resize augmentation. Gradients reach
the trained parts through the frozen VAE decoder. No Ray or MLflow here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RATE_LEVELS, ModelConfig, Route
from ..diffusion import ResidualSchedule, ResidualSchedules
from ..models.backbone import Backbone
from ..models.compressor import (
    GAIN_PARAMETERS, LINEAR_MODULES, SYNTHESIS_MODULES, TRANSFORM_MODULES, LatentCompressor, TieredCompressor,
)
from ..models.kernels import guard
from .config import LossConfig
from .discriminator import build_discriminator, hinge, mean_logit

AUGMENT_PAD = 15  # px, as in the official stage 2


def draw_crop() -> tuple[int, int, int, int]:
    """(left, right, top, bottom) px cut from the padded batch, each in 0..AUGMENT_PAD."""
    left, right, top, bottom = (int(v) for v in torch.randint(0, AUGMENT_PAD + 1, (4,)))
    return left, right, top, bottom


def shared_augment(a: Tensor, b: Tensor, crop: tuple[int, int, int, int] | None = None) -> tuple[Tensor, Tensor]:
    """The same replicate-pad, crop (random unless given) and bicubic resize applied to both batches."""
    _, _, h, w = a.shape
    padded = F.pad(torch.cat([a, b]), [AUGMENT_PAD] * 4, mode="replicate")
    left, right, top, bottom = crop if crop is not None else draw_crop()
    crop = padded[..., top : padded.shape[-2] - bottom, left : padded.shape[-1] - right]
    out = F.interpolate(crop, size=(h, w), mode="bicubic", align_corners=False)
    return out.chunk(2)


@dataclass
class LossDraw:
    """The random choices of one loss evaluation, drawn by ``TrainableCodec.draw`` or given (a
    test recomputes every term from the same ones)."""

    timesteps: Tensor  # n per sample, in 0..N_r
    noise: Tensor  # eps, shaped like z_0
    crop: tuple[int, int, int, int] | None = None  # stage 2's augmentation; None = drawn there
    positions: Tensor | None = None  # a variable-rate model's place along its anchors, per sample


class TrainableCodec(nn.Module):
    """Compressor + control module (+ discriminator) with the stage's loss in ``forward``."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: Backbone,
        compressor: LatentCompressor,
        cdm: nn.Module,
        stage: int,
        loss: LossConfig,
        lambda_rate: float,
        lpips: nn.Module | None = None,
        features: nn.Module | None = None,
        freeze_compressor: bool = False,
        synthesis_only: bool = False,
        freeze_linear_path: bool = False,
    ) -> None:
        super().__init__()
        # A tiered model (two compressors behind one rate level) trains its shared control module
        # alone: each sample's z_c comes from the compressor its level routes to, both frozen.
        if isinstance(compressor, TieredCompressor) and not freeze_compressor:
            raise ValueError("a tiered model's compressors are assembled, not trained: set optim.freeze_compressor "
                             "to train its control module")
        self.compressor = compressor
        # A frozen compressor keeps no trainable parameter (DDP and the optimisers then skip it).
        self.freeze_compressor = freeze_compressor
        if freeze_compressor or synthesis_only:
            compressor.requires_grad_(False)
        if synthesis_only:  # the bits depend on none of these: every rate stays where it is
            for name, part in compressor.named_children():
                if name in SYNTHESIS_MODULES:
                    part.requires_grad_(True)
            if compressor.variable_rate:
                compressor.log_inverse_gain.requires_grad_(True)
        if freeze_linear_path:
            if not compressor.config.linear_transform:
                raise ValueError("optim.freeze_linear_path: this compressor has no linear path "
                                 "(compressor.linear_transform is false)")
            for name in LINEAR_MODULES:
                getattr(compressor, name).requires_grad_(False)
        self.cdm = cdm
        self.discriminator = build_discriminator(loss.discriminator, features.net if features is not None else None) \
            if stage == 2 and loss.lambda_adversarial > 0 else None
        self.adversarial_on = True  # False: the discriminator learns, the generator's term is only reported
        # Frozen helpers are kept out of the module tree: DDP then neither syncs nor checks them.
        self.__dict__["backbone"] = backbone
        self.__dict__["lpips"] = lpips
        self.__dict__["features"] = features
        self.config = config
        self.stage = stage
        self.weights = loss
        self.lambda_rate = lambda_rate
        rp = config.rate_point
        self._schedules = ResidualSchedules(rp)
        self.schedule = self._schedules(rp.residual_steps)
        if stage == 2 and lpips is None and loss.lambda_lpips > 0:
            raise ValueError("stage 2 with lambda_lpips > 0 needs an LPIPS module")
        if loss.lambda_feature > 0 and features is None:
            raise ValueError("lambda_feature > 0 needs the feature network (train.feature_loss.FeatureLoss)")
        # Keep every trained layer that oneDNN's 1x1 backward-weights bug hits on the native
        # kernels (models/kernels.py); the rest trains on oneDNN.
        guard(self)

    # -- parameter groups ----------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """main: the compressor's entropy model (no quantiles) + control module; transform: the
        compressor's analysis and synthesis transforms; aux: quantiles; gains: a variable-rate
        compressor's gain vectors (only when it has them); disc: discriminator."""
        named = [(n, p) for n, p in self.compressor.named_parameters() if p.requires_grad]
        aux = [p for n, p in named if n.endswith("quantiles")]
        gains = [p for n, p in named if n in GAIN_PARAMETERS]
        transform = [p for n, p in named if n.split(".")[0] in TRANSFORM_MODULES]
        own_group = {id(p) for p in aux + gains + transform}
        main = [p for _, p in named if id(p) not in own_group]
        main += [p for p in self.cdm.parameters() if p.requires_grad]
        groups = {"main": main, "transform": transform, "aux": aux}
        if gains:
            groups["gains"] = gains
        if self.discriminator is not None:
            groups["disc"] = list(self.discriminator.parameters())
        return groups

    # -- the loss ------------------------------------------------------------------------------
    def draw(self, z0: Tensor, position: Tensor | None = None) -> LossDraw:
        """n ~ U{0..N_r} (inclusive: n = N_r trains the start point, RESULIC.md §4) and eps ~ N(0, I);
        each sample's own N_r where it has a rate position (``residual_steps``)."""
        n_r = self.residual_steps(position)
        if n_r is None:
            n = torch.randint(0, self.schedule.N + 1, (z0.shape[0],), device=z0.device)
        else:
            top = torch.tensor(n_r, device=z0.device)
            n = torch.minimum((torch.rand(z0.shape[0], device=z0.device) * (top + 1)).long(), top)
        return LossDraw(n, torch.randn_like(z0))

    def residual_steps(self, position: Tensor | None) -> list[int] | None:
        """Each sample's N_r: a variable-rate model's follows its rate position, as a decoder's
        follows the file's level (so the steps a level decodes with are the ones it trained on);
        None: the rate point's one N_r for every sample."""
        variable = self.config.rate_point.variable
        if variable is None or position is None:
            return None
        if self.config.rate_point.low_tier is not None:
            return [route.residual_steps for route in self.routes(position)]
        return [variable.residual_steps_at_position(float(p)) for p in position]

    def routes(self, position: Tensor) -> list[Route]:
        """A tiered model's samples: the rate level nearest each position (positions run along the
        main anchors, as the levels do) and where the decoder routes that level."""
        rate_point = self.config.rate_point
        scale = RATE_LEVELS / (rate_point.variable.anchors - 1)
        return [rate_point.route(min(RATE_LEVELS, max(0, round(float(p) * scale)))) for p in position]

    def predict_noise(self, z_n: Tensor, n: Tensor, context: Tensor, z_c: Tensor, position: Tensor | None) -> Tensor:
        """eps from the control module and prior; a tiered model's rows whose tier decodes with the
        prior alone (``low_tier.control: none``) predict it as the decoder will, without control."""
        controls = None if position is None or self.config.rate_point.low_tier is None \
            else [route.control for route in self.routes(position)]
        if controls is None or all(controls):
            return self.cdm(z_n, n, encoder_hidden_states=context, controlnet_cond=z_c).sample
        return by_group(controls, lambda flag, z, t, c, cond: self.cdm(
            z, t, encoder_hidden_states=c, controlnet_cond=cond, **({} if flag else {"apply_control": False})).sample,
            z_n, n, context, z_c)

    def compress_latents(self, z0: Tensor, position: Tensor | None) -> tuple[Tensor, Tensor]:
        """z_c and each sample's estimated bits; a tiered model's samples through their tiers."""
        if not isinstance(self.compressor, TieredCompressor):
            out = self.compressor(z0, position)
            return out["z_c"], _bits(out["likelihoods"])
        routes = self.routes(position)
        own_positions = torch.tensor([route.position for route in routes], device=z0.device)

        def through_tier(tier: str, z: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
            out = self.compressor.low(z, positions) if tier == "low" else self.compressor.main(z, positions)
            return out["z_c"], _bits(out["likelihoods"])

        return by_group([route.tier for route in routes], through_tier, z0, own_positions)

    def schedule_for(self, n_r: int) -> ResidualSchedule:
        return self._schedules(n_r)

    def per_schedule(self, n_r: list[int] | None, fn, *tensors: Tensor) -> Tensor:
        """``fn(schedule, *rows)`` for each group of samples that share an N_r, back in batch order."""
        if n_r is None:
            return fn(self.schedule, *tensors)
        return by_group(n_r, lambda value, *rows: fn(self.schedule_for(value), *rows), *tensors)

    def draw_positions(self, batch: int, device) -> Tensor:
        """A variable-rate model trains every rate at once: positions ~ U[0, anchors - 1], or
        U over loss.position_range where the run trains part of the rate range."""
        low, high = self.weights.position_range or (0.0, self.config.rate_point.variable.anchors - 1)
        return low + torch.rand(batch, device=device) * (high - low)

    def pixel_loss(self, z_c: Tensor, images: Tensor, corner: tuple[int, int] | None = None) -> Tensor:
        """MSE between VAE-Dec(z_c) and the image over one random window (``corner``: its top-left
        latent cell, else drawn) of the first ``pixel_samples`` crops; gradients reach z_c through
        the frozen decoder."""
        decoded, target = self.decoded_window(z_c, images, corner)
        return F.mse_loss(decoded, target)

    def decoded_window(self, z_c: Tensor, images: Tensor, corner: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """(VAE-Dec of a window of z_c, the same window of the images), both float, [0, 1] scale."""
        w = self.weights
        k = min(w.pixel_samples, z_c.shape[0])
        h, wd = z_c.shape[-2:]
        ch, cw = min(w.pixel_window // 8, h), min(w.pixel_window // 8, wd)
        if corner is None:
            corner = (int(torch.randint(0, h - ch + 1, ())), int(torch.randint(0, wd - cw + 1, ())))
        top, left = corner
        factor = images.shape[-1] // wd
        window = z_c[:k, :, top : top + ch, left : left + cw]
        target = images[:k, :, top * factor : (top + ch) * factor, left * factor : (left + cw) * factor]
        return self.backbone.decode_unclamped(window).float(), target.float()

    def forward(
        self, images: Tensor, captions: list[str], latents: Tensor | None = None, draw: LossDraw | None = None,
        rate_only: bool = False,
    ) -> dict[str, Tensor]:
        """``images`` in [0, 1], (B, 3, H, W); ``latents``: their cached z_0, when the data has
        them (else the frozen encoder runs here). Returns the terms; ``total`` is what to
        backprop (the model loss, the entropy models' auxiliary loss and the discriminator's
        loss touch disjoint parameters, each stepped by its own optimiser). ``draw`` fixes the
        random timesteps, noise and crop (default: fresh ones). ``rate_only``: the rate term alone
        (while the transforms are frozen nothing else has a gradient: STE rounding passes none to
        the predicted means), so the decoder's passes are skipped."""
        backbone = self.backbone
        with torch.no_grad():
            z0 = latents if latents is not None else backbone.encode(images)
            context = backbone.encode_text(list(captions))
        variable = self.config.rate_point.variable
        position = draw.positions if draw is not None and draw.positions is not None else (
            None if variable is None else self.draw_positions(z0.shape[0], z0.device))
        with torch.no_grad() if self.freeze_compressor else contextlib.nullcontext():
            z_c, bits = self.compress_latents(z0, position)
        pixels = images.shape[-2] * images.shape[-1]
        rate = bits.mean() / pixels

        terms = {"bpp_estimated": rate, "loss_guide": F.mse_loss(z_c.float(), z0.float())}
        if self.freeze_compressor:  # nothing of the rate can train (a tiered model has no one λ_R per position)
            rate_term = torch.zeros((), device=z0.device)
        elif variable is None:
            rate_term = self.lambda_rate * rate
        else:  # each sample at its own rate: λ_R of its position along the anchors
            lambdas = torch.tensor([variable.lambda_at(float(p)) for p in position], device=bits.device)
            rate_term = (lambdas * bits).mean() / pixels
        if rate_only:
            if self.weights.rate_only_objective == "log":  # bits >= 1: log stays finite and >= 0
                rate_term = torch.log2(bits.clamp_min(1.0)).mean()
            terms["loss"] = rate_term
            terms["loss_aux"] = self.compressor.aux_loss()
            terms["total"] = rate_term + terms["loss_aux"]
            return terms
        # A frozen compressor: the rate and latent terms are reported, not trained.
        loss = rate_term + self.weights.lambda_guide * terms["loss_guide"] if not self.freeze_compressor \
            else torch.zeros((), device=z0.device)
        if self.weights.lambda_pixel > 0 and not self.freeze_compressor:
            decoded, target = self.decoded_window(z_c, images)
            terms["loss_pixel"] = F.mse_loss(decoded, target)
            loss = loss + self.weights.lambda_pixel * terms["loss_pixel"]
            if self.weights.lambda_feature > 0:
                terms["loss_feature"] = self.features(decoded, target)
                loss = loss + self.weights.lambda_feature * terms["loss_feature"]
        if self.weights.lambda_eps == 0:  # compressor warm-up: no network pass at all
            terms["loss"] = loss
            terms["loss_aux"] = self.compressor.aux_loss()
            terms["total"] = loss + terms["loss_aux"]
            return terms
        draw = draw if draw is not None else self.draw(z0, position)
        n, noise = draw.timesteps, draw.noise
        n_r = self.residual_steps(position)
        z_n = self.per_schedule(n_r, lambda s, *rows: s.q_sample(*rows), z0, z_c, noise, n)
        eps = self.predict_noise(z_n, n, context, z_c, position)
        terms["loss_eps"] = F.mse_loss(eps.float(), noise.float())
        loss = self.weights.lambda_eps * terms["loss_eps"] + loss
        disc_loss = torch.zeros((), device=images.device)
        if self.stage == 2:
            x0_hat = self.per_schedule(n_r, lambda s, *rows: s.predict_x0(*rows), z_n, eps, z_c, n)
            x_hat = backbone.decode_unclamped(x0_hat).float() * 2 - 1
            x = images * 2 - 1
            x_hat, x = shared_augment(x_hat, x, draw.crop)
            terms["loss_mse"] = F.mse_loss(x_hat, x)
            loss = loss + self.weights.lambda_mse * terms["loss_mse"]
            if self.weights.lambda_feature > 0:  # the pretrained feature distance on [0, 1] pixels
                terms["loss_feature"] = self.features((x_hat + 1) / 2, (x + 1) / 2)
                loss = loss + self.weights.lambda_feature * terms["loss_feature"]
            if self.weights.lambda_lpips > 0:
                terms["loss_lpips"] = self.lpips(x_hat, x).mean()
                loss = loss + self.weights.lambda_lpips * terms["loss_lpips"]
            if self.discriminator is not None:
                # The generator's term sees the discriminator's weights as constants, and the
                # discriminator's term sees x̂ as a constant: one backward, two directions.
                frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
                buffers = dict(self.discriminator.named_buffers())
                fake_logits = torch.func.functional_call(self.discriminator, {**frozen, **buffers}, (x_hat,))
                terms["loss_adversarial"] = -mean_logit(fake_logits)
                if self.adversarial_on:
                    loss = loss + self.weights.lambda_adversarial * terms["loss_adversarial"]
                disc_loss = hinge(self.discriminator(x), self.discriminator(x_hat.detach()))
                terms["loss_discriminator"] = disc_loss
        terms["loss"] = loss
        terms["loss_aux"] = self.compressor.aux_loss()
        terms["total"] = loss + terms["loss_aux"] + disc_loss
        return terms


def by_group(keys: list, fn, *tensors: Tensor):
    """``fn(key, *rows)`` for each group of samples that share a key (their N_r, tier, or whether
    the control module applies), put back in batch order; ``fn`` returns a tensor or a tuple of them."""
    outs = None
    for key in sorted(set(keys)):
        rows = torch.tensor([i for i, k in enumerate(keys) if k == key], device=tensors[0].device)
        parts = fn(key, *(t[rows] for t in tensors))
        parts = parts if isinstance(parts, tuple) else (parts,)
        outs = [p.new_empty((len(keys), *p.shape[1:])) for p in parts] if outs is None else outs
        outs = [o.index_put((rows,), p.to(o.dtype)) for o, p in zip(outs, parts)]
    return outs[0] if len(outs) == 1 else tuple(outs)


def _bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """Estimated bits per sample: -log2 of every coded symbol's likelihood."""
    return sum((-torch.log2(lk)).flatten(1).sum(1) for lk in likelihoods.values())

