"""Every equation of RESULIC.md §2–§4, each recomputed here from the spec's own formula.

The schedule's coefficients come from an independent alphas_cumprod table; the training loss
terms are recomputed by hand from the same draw of n, eps and crop. A flipped sign, a swapped
pair, a wrong unit, a dropped weight or an off-by-one range fails a test here
(docs/architecture.md, "How the equations are tested", lists the planted errors and their tests).
Fixed seeds, tiny sizes.
"""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from resulic.config import NEGATIVE_PROMPT, QUALITY_SUFFIX, ModelConfig, RatePointConfig
from resulic.codec.codec import guided_denoiser
from resulic.diffusion import ResidualSchedule, residual_ddim_sample
from resulic.models.compressor import ANCHOR_PARITY, SCALE_TABLE, LatentCompressor
from resulic.semantics.prompt import prompt_input_ids, text_token_ids
from resulic.train.checkpoint import fresh_parts
from resulic.train.config import LossConfig
from resulic.train.model import AUGMENT_PAD, LossDraw, TrainableCodec
from resulic.train.perceptual import build_lpips

N = 300
# SD's scaled-linear schedule, written out once more: betas from linspace of their square roots.
ALPHA_BAR = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0)


def a(t):
    return float(ALPHA_BAR[t])


def r(t):
    return math.sqrt(1 / a(t) - 1)


def gamma(variant, n, N=N):
    return 1 / r(N) if variant == "constant" else r(n) / r(N) ** 2


def _latents(shape=(2, 4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3)]


# -- §3.2 forward process, §3.3 x̂0, §3.6 start ------------------------------------------------

@pytest.mark.parametrize("variant", ["constant", "time_varying"])
def test_forward_process_is_the_papers(variant):
    """z_n = sqrt(a_n) z_0 + sqrt(1 - a_n) (eps + gamma_n (z_c - z_0)), per-sample n, n = N included."""
    s = ResidualSchedule(residual_steps=N, gamma_variant=variant)
    z0, zc, eps = _latents()
    n = torch.tensor([0, N])
    got = s.q_sample(z0, zc, eps, n)
    for i, t in enumerate(n.tolist()):
        expected = math.sqrt(a(t)) * z0[i] + math.sqrt(1 - a(t)) * (eps[i] + gamma(variant, t) * (zc[i] - z0[i]))
        torch.testing.assert_close(got[i], expected, rtol=1e-12, atol=1e-12)
    for t in (1, 137, N - 1):
        expected = math.sqrt(a(t)) * z0 + math.sqrt(1 - a(t)) * (eps + gamma(variant, t) * (zc - z0))
        torch.testing.assert_close(s.q_sample(z0, zc, eps, t), expected, rtol=1e-12, atol=1e-12)
    # the start of decoding: z_N = sqrt(a_N) z_c + sqrt(1 - a_N) eps
    torch.testing.assert_close(s.start(zc, eps), math.sqrt(a(N)) * zc + math.sqrt(1 - a(N)) * eps, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["constant", "time_varying"])
def test_x0_prediction_is_the_closed_form(variant):
    """§3.3 on arbitrary (z_n, eps_hat), not only on consistent ones; x̂0 := z_c at n = N."""
    s = ResidualSchedule(residual_steps=N, gamma_variant=variant)
    z_n, zc, eps_hat = _latents(seed=3)
    for t in (0, 60, 250, N - 1):
        if variant == "constant":
            zc_coef, denom = 1 / r(N), 1 - r(t) / r(N)
        else:
            zc_coef, denom = r(t) / r(N) ** 2, 1 - r(t) ** 2 / r(N) ** 2
        expected = (z_n - math.sqrt(1 - a(t)) * (eps_hat + zc_coef * zc)) / math.sqrt(a(t)) / denom
        torch.testing.assert_close(s.predict_x0(z_n, eps_hat, zc, t), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s.predict_x0(z_n, eps_hat, zc, N), zc)


# -- §3.4 the step, for every η ---------------------------------------------------------------

@pytest.mark.parametrize("eta", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("t,s_", [(200, 100), (100, 0), (300, 150), (57, 56)])
def test_step_coefficients_for_every_eta(eta, t, s_):
    sched = ResidualSchedule(residual_steps=N, eta=eta)
    at, as_ = a(t), a(s_)
    if eta == 0:
        iota, sigma = math.sqrt((1 - as_) / (1 - at)), 0.0
    else:
        iota = (1 - as_) / (1 - at) * math.sqrt(at / as_)
        sigma = eta * math.sqrt((1 - as_) / (1 - at) * (1 - at / as_))
    zeta = math.sqrt(as_) - iota * math.sqrt(at)
    got = sched.step_coefficients(t, s_)
    assert got == pytest.approx((iota, zeta, sigma), rel=1e-10, abs=1e-15)
    if eta > 0 and t - s_ == 1:  # a single step: zeta = sqrt(a_{n-1}) beta_n / (1 - a_n)
        assert got[1] == pytest.approx(math.sqrt(as_) * (1 - at / as_) / (1 - at), rel=1e-9)


def _true_x0_step(sched, z0, zc, z_t, t, generator):
    """One sampler step from z_t with the noise that produced it, i.e. with x̂0 = z_0."""
    eps = (z_t - math.sqrt(a(t)) * z0) / math.sqrt(1 - a(t)) - sched.gamma(t).item() * (zc - z0)
    return sched.step(eps, t, z_t, zc, generator=generator)


def _step_marginal_error(variant, eta, t, s_, draws=4096):
    """(max |mean error| / sd, |variance ratio - 1|) of one step against q(z_s | z_0, z_c)."""
    sched = ResidualSchedule(residual_steps=N, gamma_variant=variant, eta=eta)
    g = torch.Generator().manual_seed(5)
    z0, zc = (torch.randn(1, 4, 4, 4, generator=g, dtype=torch.float64).expand(draws, -1, -1, -1) for _ in range(2))
    eps = torch.randn(z0.shape, generator=g, dtype=torch.float64)
    z_t = sched.q_sample(z0, zc, eps, t)
    sched.previous_timestep = lambda _t: s_  # step from t straight to s
    z_s = _true_x0_step(sched, z0, zc, z_t, t, g)
    mean = math.sqrt(a(s_)) * z0[0] + math.sqrt(1 - a(s_)) * gamma(variant, s_) * (zc[0] - z0[0])
    sd = math.sqrt(1 - a(s_))
    mean_error = float((z_s.mean(0) - mean).abs().max()) / sd
    variance_error = abs(float(z_s.var(0).mean()) / sd**2 - 1)
    return mean_error, variance_error


@pytest.mark.parametrize("variant,eta", [("constant", 0.0), ("time_varying", 1.0)])
@pytest.mark.parametrize("t,s_", [(200, 100), (100, 0), (290, 10)])
def test_each_variant_with_its_eta_lands_on_the_forward_marginal(variant, eta, t, s_):
    """z_t ~ q(z_t | z_0, z_c), one step with the true x0 -> z_s ~ q(z_s | z_0, z_c) (§3.4)."""
    mean_error, variance_error = _step_marginal_error(variant, eta, t, s_)
    assert mean_error < 5 / math.sqrt(4096) and variance_error < 0.03, (mean_error, variance_error)


@pytest.mark.parametrize("variant,eta", [("constant", 1.0), ("time_varying", 0.0), ("time_varying", 0.5)])
def test_the_wrong_eta_misses_the_marginal(variant, eta):
    """Why RatePointConfig refuses time_varying with η ≠ 1: those steps leave the training path."""
    mean_error, variance_error = _step_marginal_error(variant, eta, 200, 100)
    assert mean_error > 0.2 or variance_error > 0.1, (mean_error, variance_error)


def test_constant_variant_step_is_exact_pointwise():
    """η = 0 keeps the effective noise: the step lands exactly on q_sample with the same eps."""
    sched = ResidualSchedule(residual_steps=N)
    sched.set_timesteps(3)
    z0, zc, eps = _latents(seed=1)
    for t, s_ in ((200, 100), (100, 0)):
        z_s = _true_x0_step(sched, z0, zc, sched.q_sample(z0, zc, eps, t), t, None)
        expected = math.sqrt(a(s_)) * z0 + math.sqrt(1 - a(s_)) * (eps + gamma("constant", s_) * (zc - z0))
        torch.testing.assert_close(z_s, expected, rtol=1e-9, atol=1e-9)


def test_eta_defaults_to_the_variants_own_and_refuses_a_mismatch():
    assert RatePointConfig().resolved_eta == 0.0
    assert RatePointConfig(gamma="time_varying").resolved_eta == 1.0
    assert RatePointConfig(eta=0.4).resolved_eta == 0.4
    with pytest.raises(ValueError, match="eta"):
        RatePointConfig(gamma="time_varying", eta=0.0)
    with pytest.raises(ValueError):
        RatePointConfig(eta=1.5)
    # the codec and training build their schedule with it
    config = ModelConfig(rate_point=RatePointConfig(gamma="time_varying"))
    assert ResidualSchedule(residual_steps=300, gamma_variant="time_varying", eta=config.rate_point.resolved_eta).config.eta == 1.0


def test_an_unset_eta_leaves_the_canonical_form_unchanged():
    """Fingerprints of existing files stay the same; a set η is part of the model."""
    base = ModelConfig().canonical_json()
    assert "eta" not in base
    assert ModelConfig(rate_point=RatePointConfig(eta=0.5)).canonical_json() != base
    explicit = ModelConfig(rate_point=RatePointConfig(eta=0.0))
    assert ModelConfig.model_validate_json(explicit.canonical_json()).rate_point.eta == 0.0  # survives a round trip


def test_the_eta_step_noise_comes_from_the_seeded_generator():
    """Same seed, same output; another seed, another output; no generator, an error."""
    sched = ResidualSchedule(residual_steps=N, gamma_variant="time_varying", eta=1.0)
    z0, zc, noise = _latents(seed=2)

    def decode(seed):
        return residual_ddim_sample(sched, lambda x, t: torch.zeros_like(x), zc, noise, 3,
                                    generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(decode(7), decode(7), rtol=0, atol=0)
    assert not torch.equal(decode(7), decode(8))
    with pytest.raises(ValueError, match="generator"):
        residual_ddim_sample(sched, lambda x, t: torch.zeros_like(x), zc, noise, 3)


# -- §3.6 grid and classifier-free guidance -----------------------------------------------------

@pytest.mark.parametrize("N_r,S", [(300, 7), (287, 4), (100, 3), (495, 6)])
def test_grid_when_S_does_not_divide_N(N_r, S):
    """Ours: floor(i N / S), S+1 distinct points from N to 0 -- S steps, S-1 network calls; and
    every step after the first is residual-consistent on it, as on the official grid."""
    sched = ResidualSchedule(residual_steps=N_r)
    sched.set_timesteps(S)
    grid = sched.timesteps.tolist()
    assert grid == [i * N_r // S for i in range(S, -1, -1)]
    assert len(set(grid)) == S + 1 and grid[0] == N_r and grid[-1] == 0
    z0, zc, eps = _latents(seed=4)

    def oracle(x, t):
        return (x - math.sqrt(a(t)) * z0) / math.sqrt(1 - a(t)) - gamma("constant", t, N_r) * (zc - z0)

    calls = []
    out = residual_ddim_sample(sched, lambda x, t: calls.append(t) or oracle(x, t), zc, eps, S)
    assert calls == grid[1:-1]
    s1 = grid[1]  # after the network-free t = N step: sqrt(a_s1) z_c + sqrt(1 - a_s1) eps
    effective = (math.sqrt(a(s1)) * zc + math.sqrt(1 - a(s1)) * eps - math.sqrt(a(s1)) * z0) / math.sqrt(1 - a(s1))
    torch.testing.assert_close(out, math.sqrt(a(0)) * z0 + math.sqrt(1 - a(0)) * effective, rtol=1e-9, atol=1e-9)


class _BranchDenoiser(torch.nn.Module):
    """A stand-in for the UNet + control module whose output is known per branch: eps of a row
    = the mean of its text context + 10 x its control input + 0.01 x its z_t + t / 1000."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, encoder_hidden_states, controlnet_cond):
        self.calls.append((x, t, encoder_hidden_states, controlnet_cond))
        ctx = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=ctx + 10 * controlnet_cond + 0.01 * x + t.view(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("w", [2.5, 6.0, 0.0])
def test_classifier_free_guidance_is_eps_u_plus_w_times_the_difference(w):
    fake = _BranchDenoiser()
    z_c = torch.full((1, 4, 2, 2), 0.5)
    positive, negative = torch.full((1, 3, 8), 3.0), torch.full((1, 3, 8), -1.0)
    x = torch.full((1, 4, 2, 2), 2.0)
    eps = guided_denoiser(fake, z_c, positive, negative, w)(x, 120)
    eps_u = -1.0 + 10 * 0.5 + 0.01 * 2 + 0.12  # the negative prompt, z_c still given
    eps_c = 3.0 + 10 * 0.5 + 0.01 * 2 + 0.12
    torch.testing.assert_close(eps, torch.full_like(x, eps_u + w * (eps_c - eps_u)))
    [(xin, t, _, cond)] = fake.calls  # one batched call: same z_t, t and z_c for both branches
    assert torch.equal(xin, torch.cat([x, x])) and t.tolist() == [120, 120] and torch.equal(cond, torch.cat([z_c, z_c]))


def test_guidance_one_runs_only_the_conditional_branch():
    fake = _BranchDenoiser()
    z_c, positive, x = torch.zeros(1, 4, 2, 2), torch.full((1, 3, 8), 3.0), torch.zeros(1, 4, 2, 2)
    eps = guided_denoiser(fake, z_c, positive, None, 1)(x, 0)
    torch.testing.assert_close(eps, torch.full_like(x, 3.0))
    assert len(fake.calls) == 1 and fake.calls[0][0].shape[0] == 1


def test_the_codec_guides_with_its_prompts(codec):
    """Negative branch: the fixed negative prompt; positive: '<text>, best quality, extremely detailed'."""
    fake = _BranchDenoiser()
    probe = copy.copy(codec)
    probe.cdm = fake
    tokenizer = codec.backbone.tokenizer
    ids = text_token_ids(tokenizer, "a red barn")
    z_c = torch.zeros(1, 4, 2, 2)
    probe._denoiser(z_c, ids, 2.5)(torch.zeros(1, 4, 2, 2), 50)
    context = fake.calls[0][2]
    torch.testing.assert_close(context[:1], codec.backbone.encode_text([NEGATIVE_PROMPT]))
    torch.testing.assert_close(context[1:], codec.backbone.encode_text([f"a red barn, {QUALITY_SUFFIX}"]))
    assert prompt_input_ids(tokenizer, ids).tolist() == [tokenizer(f"a red barn, {QUALITY_SUFFIX}", padding="max_length", max_length=77).input_ids]


# -- §2 the compressor: checkerboard, scale table, quantisation, rate ---------------------------

def test_scale_table_is_elics():
    expected = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64))
    torch.testing.assert_close(torch.tensor(SCALE_TABLE), expected)


@pytest.fixture(scope="module")
def compressor():
    torch.manual_seed(0)
    model = LatentCompressor(ModelConfig().compressor).eval()
    model.update(force=True)
    return model


def test_checkerboard_context_mask_sees_only_anchors(compressor):
    """The 5x5 context conv of every channel group reads the (row + col)-odd offsets, never the centre."""
    from compressai.layers import CheckerboardMaskedConv2d

    expected = torch.tensor([[(i + j) % 2 for j in range(5)] for i in range(5)], dtype=torch.float32)
    masks = [m.mask[0, 0] for m in compressor.modules() if isinstance(m, CheckerboardMaskedConv2d)]
    assert len(masks) == len(compressor.groups)
    for mask in masks:
        assert torch.equal(mask, expected)


def test_anchors_are_where_row_plus_col_is_odd(compressor):
    """Behaviourally: a position is an anchor iff changing it changes other positions' ŷ in its
    group (non-anchors are predicted from anchors, anchors from nothing in their group)."""
    assert ANCHOR_PARITY == "odd"
    groups_codec = compressor.latent_codec.latent_codec["y"]
    g = torch.Generator().manual_seed(0)
    M, H, W = sum(compressor.groups), 6, 6
    y = torch.randn(1, M, H, W, generator=g) * 3
    side = torch.randn(1, 2 * M, H, W, generator=g)
    channel = 0  # group 0: its channels 0..groups[0]-1
    width = compressor.groups[0]
    with torch.no_grad():
        base = groups_codec(y, side)["y_hat"][:, :width]
        found = torch.zeros(H, W, dtype=torch.long)
        for row in range(H):
            for col in range(W):
                moved = y.clone()
                moved[0, channel, row, col] += 1.0
                changed = (groups_codec(moved, side)["y_hat"][:, :width] - base).abs().sum(dim=(0, 1)) > 1e-6
                changed[row, col] = False
                found[row, col] = int(changed.any())
    expected = torch.tensor([[(row + col) % 2 for col in range(W)] for row in range(H)])
    assert torch.equal(found, expected), found


def test_training_quantisation_is_the_decoders(compressor):
    """Training feeds g_s the same ŷ (STE rounding of y - mu, plus mu) as the coder: z_c agrees."""
    z0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    compressor.train()
    try:
        with torch.no_grad():
            trained = compressor(z0)["z_c"]
    finally:
        compressor.eval()
    torch.testing.assert_close(trained, compressor.compress(z0).z_c, rtol=1e-5, atol=1e-5)


# -- §4 training losses -------------------------------------------------------------------------

WEIGHTS = dict(lambda_guide=0.7, lambda_mse=0.3, lambda_lpips=2.0)
LAMBDA_RATE = 6.0


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(11))


def _trainable(codec, stage):
    torch.manual_seed(0)
    compressor, cdm = fresh_parts(codec.config, codec.backbone)
    lpips = build_lpips(None)[0] if stage == 2 else None
    return TrainableCodec(codec.config, codec.backbone, compressor, cdm, stage, LossConfig(**WEIGHTS), LAMBDA_RATE, lpips)


def _by_hand(model, images, captions, draw, seed):
    """Every term of §4 from the spec, with the network calls as the only shared code."""
    backbone = model.backbone
    sf = backbone.scaling_factor
    with torch.no_grad():
        z0 = backbone.vae.encode(images * 2 - 1).latent_dist.mode() * sf  # z_0: mode x 0.18215, x in [-1, 1]
        context = backbone.encode_text(captions)
        torch.manual_seed(seed)  # the same likelihood noise as in forward
        out = model.compressor(z0)
        z_c = out["z_c"]
        B, _, H, W = images.shape
        rate = sum((-torch.log2(lk)).sum() for lk in out["likelihoods"].values()) / (B * H * W)  # per image pixel
        n, eps = draw.timesteps, draw.noise
        z_n = torch.stack([
            math.sqrt(a(t)) * z0[i] + math.sqrt(1 - a(t)) * (eps[i] + gamma("constant", t) * (z_c[i] - z0[i]))
            for i, t in enumerate(n.tolist())
        ])
        eps_hat = model.cdm(z_n, n, encoder_hidden_states=context, controlnet_cond=z_c).sample
        terms = {
            "loss_eps": ((eps - eps_hat) ** 2).mean(),
            "bpp_estimated": rate,
            "loss_guide": ((z_c - z0) ** 2).mean(),
        }
        terms["loss"] = terms["loss_eps"] + LAMBDA_RATE * rate + WEIGHTS["lambda_guide"] * terms["loss_guide"]
        if model.stage == 2:
            x0_hat = torch.stack([
                z_c[i] if t == N else
                (z_n[i] - math.sqrt(1 - a(t)) * (eps_hat[i] + z_c[i] / r(N))) / math.sqrt(a(t)) / (1 - r(t) / r(N))
                for i, t in enumerate(n.tolist())
            ])
            x_hat = backbone.vae.decode(x0_hat / sf).sample  # pixels in [-1, 1], not clamped
            x = images * 2 - 1
            left, right, top, bottom = draw.crop
            both = F.pad(torch.cat([x_hat, x]), [AUGMENT_PAD] * 4, mode="replicate")
            both = both[..., top : both.shape[-2] - bottom, left : both.shape[-1] - right]
            x_hat, x = F.interpolate(both, size=(H, W), mode="bicubic", align_corners=False).chunk(2)
            terms["loss_mse"] = ((x_hat - x) ** 2).mean()
            terms["loss_lpips"] = model.lpips(x_hat, x).mean()
            terms["loss"] = terms["loss"] + WEIGHTS["lambda_mse"] * terms["loss_mse"] + WEIGHTS["lambda_lpips"] * terms["loss_lpips"]
    return terms


@pytest.mark.parametrize("stage", [1, 2])
def test_every_loss_term_and_the_weighted_total(codec, images, stage):
    model = _trainable(codec, stage)
    assert model.schedule.N == N and model.config.rate_point.gamma == "constant"
    captions = ["a red barn", ""]
    g = torch.Generator().manual_seed(21)
    z_shape = (2, 4, 16, 16)
    timesteps = torch.tensor([N, 137]) if stage == 2 else torch.tensor([0, 213])  # n = N: x̂0 := z_c
    draw = LossDraw(timesteps, torch.randn(z_shape, generator=g), crop=(3, 11, 0, 15))
    torch.manual_seed(99)
    with torch.no_grad():
        got = model(images, captions, draw=draw)
    expected = _by_hand(model, images, captions, draw, seed=99)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    assert float(got["loss_eps"]) > 0 and float(got["loss_guide"]) > 0 and float(got["bpp_estimated"]) > 0
    if stage == 2:
        assert float(got["loss_mse"]) > 0 and float(got["loss_lpips"]) > 0


def test_timesteps_cover_0_to_N_inclusive_and_the_noise_is_standard(codec):
    model = _trainable(codec, 1)
    z0 = torch.zeros(8, 4, 4, 4)
    torch.manual_seed(5)
    draws = [model.draw(z0) for _ in range(800)]
    n = torch.cat([d.timesteps for d in draws])
    assert n.dtype == torch.long and int(n.min()) == 0 and int(n.max()) == N
    assert len(torch.unique(n)) > 0.9 * (N + 1)  # uniform over all N + 1 values
    noise = torch.cat([d.noise for d in draws])
    assert noise.shape[1:] == z0.shape[1:]
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02


# -- decoding on the tiny profile ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("gamma_variant,n_r,steps", [("time_varying", 300, 3), ("constant", 287, 4)])
def test_tiny_codec_decodes_each_variant_and_grid_deterministically(codec, photo, gamma_variant, n_r, steps):
    """The time-varying variant decodes with η = 1 (its step noise from the file's seed), and a
    grid where S does not divide N_r decodes the same pixels in every codec, every time."""
    from resulic.codec import Codec

    config = ModelConfig(rate_point=RatePointConfig(gamma=gamma_variant, residual_steps=n_r, sampling_steps=steps))
    first, second = Codec.build(config, backbone=codec.backbone), Codec.build(config, backbone=codec.backbone)
    assert first.schedule.config.eta == (1.0 if gamma_variant == "time_varying" else 0.0)
    data = first.encode(photo).data
    a, b = first.decode(data), second.decode(data)
    assert a.image.tobytes() == b.image.tobytes() == first.decode(data).image.tobytes()
    assert a.network_evaluations == 2 * (steps - 1)
    if gamma_variant == "time_varying":  # the seed reaches the η = 1 steps' noise
        other = first.decode(first.encode(photo, seed=7).data)
        assert other.image.tobytes() != a.image.tobytes()
