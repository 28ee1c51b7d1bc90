"""Prompt fidelity optimisation (Pfo), PEZ-style "hard prompts made easy" (RESULIC.md §6).

The encoder refines the residual's tokens P' so that the decoder, conditioned on them, lands
closer to the original image:

    L_pfo = λ_l E_{n, ε} ‖ε − ε_θ(z_n, n, z_c, E(P'))‖² + λ_c (1 − cos(CLIP_img(x), CLIP_txt(P')))

- P ∈ R^{L×d} are continuous token embeddings, initialised from the residual's tokens (L fixed).
  Every step projects each row to its nearest vocabulary embedding (cosine) to get P'; the
  loss is computed at P' and its gradient applied to P (straight-through).
- E(P') is the decoder's own text features: the backbone's text encoder output (SD 2.1's
  penultimate layer + ln_final) of exactly the decoder's prompt — P' followed by the quality
  suffix (``prompt_input_ids``); the official script used the last layer and no suffix (§0 item 6).
- n is drawn from the decoder's DDIM grid, ε and n from a generator seeded with the decoder's
  seed, z_0 is the codec's own z_0 (posterior mode), z_n = q_sample(z_0, z_c, ε, n).
- The CLIP term is used when ``pfo.clip_model`` names a transformers CLIPModel whose token
  embeddings have the backbone's width (as OpenCLIP-H has SD 2.1's).
- Selection: at the start, every K iterations and at the end, the projected tokens are decoded
  exactly as the receiver will (``Codec.sample`` with the same S, guidance and seed) and scored
  against x with the configured metric; the best tokens are what gets coded.
- Bounds: ``iterations`` and ``time_budget_s`` (checked after every iteration, so at least one
  iteration runs; the final selection decode comes after the loop).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..config import PfoConfig
from ..errors import ModelLoadError
from ..images import image_to_tensor, pad_to_multiple
from .prompt import MAX_TEXT_TOKENS, ids_to_text, prompt_input_ids, special_ids

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class PfoRun:
    tokens: list[int]  # the selected tokens (what gets coded)
    initial_tokens: list[int]
    metric: str
    initial_score: float
    best_score: float
    iterations: int = 0
    seconds: float = 0.0
    stopped_by: str = "iterations"
    losses: list[float] = field(default_factory=list)  # L_pfo at the projected tokens, per iteration
    scores: list[tuple[int, float]] = field(default_factory=list)  # (iteration, metric) per selection decode
    text: str = ""

    def report(self) -> dict:
        return {
            "metric": self.metric, "initial_score": self.initial_score, "best_score": self.best_score,
            "iterations": self.iterations, "seconds": round(self.seconds, 3), "stopped_by": self.stopped_by,
            "selection_decodes": len(self.scores), "text": self.text,
        }


# -- metrics ---------------------------------------------------------------------------------------
class Metric:
    """Lower is better (PSNR is negated internally; ``value`` reports it with its usual sign)."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.net = None
        if name in ("lpips", "lpips-random"):
            import lpips

            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)  # the random trunk of lpips-random is the same everywhere
                    self.net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=name == "lpips-random", verbose=False)
            except Exception as exc:  # torchvision tries to download AlexNet's weights
                raise ModelLoadError(
                    "pfo.metric 'lpips' needs torchvision's AlexNet weights in the torch hub cache "
                    f"({type(exc).__name__}); use 'psnr' or 'lpips-random' offline"
                ) from None
            self.net = self.net.to(device).eval().requires_grad_(False)
            if name == "lpips-random":
                self.name = "lpips-random (LPIPS heads on a random AlexNet trunk: plumbing, not a perceptual score)"

    @torch.no_grad()
    def loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> float:
        if self.net is None:
            mse = F.mse_loss(x_hat.double(), x.double()).item()
            return -10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
        return float(self.net(x_hat * 2 - 1, x * 2 - 1).mean())

    def value(self, loss: float) -> float:
        return -loss if self.net is None else loss


# -- straight-through token embeddings ---------------------------------------------------------------
@contextmanager
def _spliced_embeddings(embedding: torch.nn.Embedding, rows: torch.Tensor, start: int = 1):
    """While active, the embedding's output at positions start..start+L-1 of the first sequence
    is ``rows`` (same values as the looked-up projected tokens, but differentiable in P)."""

    def hook(module, inputs, output):
        out = output.clone()
        out[0, start : start + rows.shape[0]] = rows.to(out.dtype)
        return out

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _ClipTerm:
    def __init__(self, source: str, width: int, image: torch.Tensor, device: torch.device) -> None:
        from transformers import CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(source).to(device).eval().requires_grad_(False)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"pfo.clip_model: cannot load a CLIPModel from {source!r}: {detail}") from None
        self.embedding = self.model.text_model.embeddings.token_embedding
        if self.embedding.weight.shape[1] != width:
            raise ModelLoadError(
                f"pfo.clip_model: its token embeddings are {self.embedding.weight.shape[1]} wide, the backbone's "
                f"{width}; the CLIP term needs a CLIP text tower that shares the backbone's tokens"
            )
        size = self.model.config.vision_config.image_size
        pixels = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
        with torch.no_grad():
            self.image_features = F.normalize(self._features(self.model.get_image_features(pixel_values=(pixels - mean) / std)), dim=-1)

    @staticmethod
    def _features(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def loss(self, ids: list[int], rows: torch.Tensor, bos: int, eos: int) -> torch.Tensor:
        length = self.model.config.text_config.max_position_embeddings
        full = [bos, *ids[: length - 2], eos]
        full += [eos] * (length - len(full))
        input_ids = torch.tensor([full], device=rows.device)
        with _spliced_embeddings(self.embedding, rows[: length - 2]):
            text = F.normalize(self._features(self.model.get_text_features(input_ids=input_ids)), dim=-1)
        return 1 - (text * self.image_features).sum()


# -- the optimisation --------------------------------------------------------------------------------
@contextmanager
def _frozen(module: torch.nn.Module):
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def optimize_prompt(
    codec, image: Image.Image, z_c: torch.Tensor, ids: list[int], config: PfoConfig,
    steps: int | None = None, guidance: float | None = None, seed: int | None = None, level: int | None = None,
) -> PfoRun:
    """Refine ``ids`` (the residual's tokens) for ``codec`` decoding ``z_c``; see the module doc.
    ``level``: the file's rate level (a variable-rate model's N_r, so its schedule, follows it)."""
    t_start = time.perf_counter()
    backbone, tokenizer, device = codec.backbone, codec.backbone.tokenizer, codec.device
    S, w, seed = codec.settings(steps, guidance, seed)
    ids = list(ids)[:MAX_TEXT_TOKENS]
    x = image_to_tensor(image).to(device)
    height, width = x.shape[-2:]
    metric = Metric(config.metric, device)

    def score(tokens: list[int]) -> float:
        z, _ = codec.sample(z_c, tokens, S, w, seed, level=level)
        return metric.loss(backbone.decode(z)[..., :height, :width], x)

    if not ids:  # nothing to refine: an empty residual stays empty
        return PfoRun([], [], metric.name, float("nan"), float("nan"), seconds=time.perf_counter() - t_start)
    initial = score(ids)
    run = PfoRun(ids, ids, metric.name, metric.value(initial), metric.value(initial))
    best_loss, best_ids = initial, list(ids)
    scored = {tuple(ids): initial}

    embedding = backbone.text_encoder.get_input_embeddings()
    excluded = special_ids(tokenizer)
    allowed = torch.tensor([i for i in range(min(len(tokenizer), embedding.weight.shape[0])) if i not in excluded], device=device)
    vocab = embedding.weight.detach()[allowed].float()
    vocab_unit = F.normalize(vocab, dim=-1)
    P = embedding.weight.detach()[torch.tensor(ids, device=device)].float().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([P], lr=config.lr, weight_decay=config.weight_decay)
    clip = _ClipTerm(config.clip_model, P.shape[1], x, device) if config.clip_model and config.clip_weight > 0 else None

    with torch.no_grad():
        z0 = backbone.encode(pad_to_multiple(x, codec.config.stride))
    schedule = codec.schedule_for(level)
    schedule.set_timesteps(S)
    grid = schedule.timesteps.tolist()
    generator = torch.Generator("cpu").manual_seed(seed)

    def draw() -> tuple[int, torch.Tensor]:
        n = grid[int(torch.randint(len(grid), (1,), generator=generator))]
        return n, torch.randn(z0.shape, generator=generator).to(device)

    fixed_draws = [draw() for _ in range(config.noise_draws)]

    def selection(iteration: int, tokens: list[int]) -> None:
        nonlocal best_loss, best_ids
        key = tuple(tokens)
        if key not in scored:
            scored[key] = score(tokens)
        run.scores.append((iteration, metric.value(scored[key])))
        if scored[key] < best_loss:
            best_loss, best_ids = scored[key], list(tokens)

    bar = tqdm(range(1, config.iterations + 1), desc="pfo", unit="it", disable=not config.progress, leave=False)
    tokens = ids
    with _frozen(codec.cdm), _frozen(backbone.text_encoder):
        for iteration in bar:
            nearest = (F.normalize(P.detach(), dim=-1) @ vocab_unit.T).argmax(dim=1)
            tokens = allowed[nearest].tolist()
            projected = vocab[nearest]
            rows = P + (projected - P).detach()  # value P', gradient to P
            with _spliced_embeddings(embedding, rows):
                context = backbone.encode_ids(prompt_input_ids(tokenizer, tokens))
            if fixed_draws:
                n, eps = fixed_draws[(iteration - 1) % len(fixed_draws)]
            else:
                n, eps = draw()
            t = torch.full((1,), n, device=device, dtype=torch.long)
            z_n = schedule.q_sample(z0, z_c, eps, t)
            eps_hat = codec.cdm(z_n, t, encoder_hidden_states=context, controlnet_cond=z_c).sample
            loss = config.diffusion_weight * F.mse_loss(eps_hat.float(), eps)
            if clip is not None:
                loss = loss + config.clip_weight * clip.loss(tokens, rows, tokenizer.bos_token_id, tokenizer.eos_token_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.losses.append(float(loss.detach()))
            run.iterations = iteration
            bar.set_postfix(loss=f"{run.losses[-1]:.4f}")
            if iteration % config.eval_every == 0:
                selection(iteration, tokens)
            if time.perf_counter() - t_start >= config.time_budget_s and iteration < config.iterations:
                run.stopped_by = "time budget"
                break
    bar.close()
    final = (F.normalize(P.detach(), dim=-1) @ vocab_unit.T).argmax(dim=1)
    selection(run.iterations, allowed[final].tolist())
    run.tokens, run.best_score = best_ids, metric.value(best_loss)
    run.seconds = time.perf_counter() - t_start
    run.text = ids_to_text(tokenizer, best_ids)
    return run


@torch.no_grad()
def prompt_loss(codec, z0: torch.Tensor, z_c: torch.Tensor, ids: list[int], draws: list[tuple[int, torch.Tensor]]) -> float:
    """The diffusion term of L_pfo for fixed tokens at fixed (n, ε) draws (for tests/benchmarks)."""
    context = codec.backbone.encode_ids(prompt_input_ids(codec.backbone.tokenizer, ids))
    total = 0.0
    for n, eps in draws:
        t = torch.full((1,), n, device=z0.device, dtype=torch.long)
        z_n = codec.schedule.q_sample(z0, z_c, eps, t)
        total += F.mse_loss(codec.cdm(z_n, t, encoder_hidden_states=context, controlnet_cond=z_c).sample, eps).item()
    return total / len(draws)
