"""Stage 0: the diffusion prior that ResULIC takes from Stable Diffusion, trained here.

Where no pretrained diffusion UNet exists (the ``small`` profile), the platform trains the
backbone's UNet as a latent diffusion model before the codec's stages build on it:

    L0 = ||eps - eps_theta(z_t, t, c)||²,   z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps,

with SD's scaled-linear schedule (diffusers' ``DDPMScheduler``: 1000 steps, betas 0.00085 to
0.012, epsilon prediction) and t ~ U{0 .. prior_timesteps - 1}. The decoder only ever runs the
prior at t <= N_r, so a stage may spend its capacity on those timesteps (``prior_timesteps``).
Stages 1 and 2 then keep the prior frozen, as ResULIC keeps SD frozen. No Ray or MLflow here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn

from ..models import use_backward_safe_kernels
from ..models.backbone import Backbone

NUM_TIMESTEPS = 1000


def sd_noise_schedule() -> DDPMScheduler:
    """Stable Diffusion's training schedule (the same alphas the residual schedule uses)."""
    return DDPMScheduler(
        num_train_timesteps=NUM_TIMESTEPS, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", prediction_type="epsilon",
    )


class TrainablePrior(nn.Module):
    """The backbone's UNet, unfrozen, with the stage-0 loss in ``forward``."""

    def __init__(self, backbone: Backbone, prior_timesteps: int = NUM_TIMESTEPS) -> None:
        super().__init__()
        use_backward_safe_kernels()
        if not 1 <= prior_timesteps <= NUM_TIMESTEPS:
            raise ValueError(f"prior_timesteps must be in 1..{NUM_TIMESTEPS}")
        self.unet: UNet2DConditionModel = backbone.unet
        self.unet.requires_grad_(True)
        self.__dict__["backbone"] = backbone  # frozen helpers stay out of DDP's module tree
        self.noise_schedule = sd_noise_schedule()
        self.prior_timesteps = prior_timesteps

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.unet.parameters())}

    def forward(self, images: Tensor, captions: list[str], latents: Tensor | None = None) -> dict[str, Tensor]:
        backbone = self.backbone
        with torch.no_grad():
            z0 = latents if latents is not None else backbone.encode(images)
            context = backbone.encode_text(list(captions))
        t = torch.randint(0, self.prior_timesteps, (z0.shape[0],), device=z0.device)
        noise = torch.randn_like(z0)
        z_t = self.noise_schedule.add_noise(z0, noise, t)
        eps = self.unet(z_t, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(eps.float(), noise.float())
        return {"loss_eps": loss, "loss": loss, "total": loss}


@torch.no_grad()
def validation_loss(prior: TrainablePrior, latents: list[Tensor], draws: int = 4) -> float:
    """The eps loss on held-out latents at fixed timesteps and noise (the same every call), so
    checkpoints compare on equal terms."""
    prior.unet.eval()
    generator = torch.Generator().manual_seed(0)
    timesteps = np.linspace(0, prior.prior_timesteps - 1, draws).round().astype(int)
    context = prior.backbone.encode_text([""])
    losses = []
    for z0 in latents:
        for t in timesteps:
            noise = torch.randn(z0.shape, generator=generator).to(z0.device)
            tt = torch.full((z0.shape[0],), int(t), device=z0.device)
            z_t = prior.noise_schedule.add_noise(z0, noise, tt)
            eps = prior.unet(z_t, tt, encoder_hidden_states=context.expand(z0.shape[0], -1, -1)).sample
            losses.append(float(F.mse_loss(eps.float(), noise.float())))
    prior.unet.train()
    return float(np.mean(losses))
