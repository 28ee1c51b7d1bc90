"""The compression-aware diffusion equations (RESULIC.md §3)."""

import pytest
import torch

from resulic.diffusion import CallCounter, ResidualSchedule, residual_ddim_sample

VARIANTS = ["constant", "time_varying"]


def _latents(seed=0):
    g = torch.Generator().manual_seed(seed)
    z0, zc, eps = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    return z0, zc, eps


@pytest.mark.parametrize(
    "N,gamma", [(100, 2.908), (200, 1.749), (300, 1.201), (400, 0.859), (405, 0.845), (495, 0.628),
                (600, 0.438), (705, 0.294), (795, 0.200)],
)
def test_constant_gamma_matches_reference_table(N, gamma):
    s = ResidualSchedule(residual_steps=N)
    assert float(s.gamma(0)) == pytest.approx(gamma, abs=5e-4)
    assert float(s.gamma(N // 2)) == pytest.approx(gamma, abs=5e-4)  # constant in n


def test_sqrt_alpha_bar_reference_values():
    s = ResidualSchedule()
    assert float(s._a(300).sqrt()) == pytest.approx(0.768, abs=1e-3)
    assert float(s._a(600).sqrt()) == pytest.approx(0.401, abs=1e-3)
    assert float(s._a(0)) == pytest.approx(0.99915, abs=1e-6)


def test_time_varying_gamma_formula():
    s = ResidualSchedule(residual_steps=300, gamma_variant="time_varying")
    for n in (0, 50, 150, 299, 300):
        a, aN = s._a(n), s._a(300)
        expected = torch.sqrt((1 - a) / a) * aN / (1 - aN)
        assert float(s.gamma(n)) == pytest.approx(float(expected), rel=1e-12)
    # the residual coefficient rides the DDPM chain: sqrt(1-a_n) gamma_n = (1-a_n)/sqrt(a_n) * aN/(1-aN)
    n = 120
    coef = torch.sqrt(1 - s._a(n)) * s.gamma(n)
    assert float(coef) == pytest.approx(float((1 - s._a(n)) / s._a(n).sqrt() * s._a(300) / (1 - s._a(300))), rel=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", [0, 1, 77, 200, 299])
def test_forward_marginal_mean_and_variance(variant, t):
    s = ResidualSchedule(residual_steps=300, gamma_variant=variant)
    z0, zc, eps = _latents()
    a = s._a(t)
    mean = s.q_sample(z0, zc, torch.zeros_like(eps), t)
    expected_mean = a.sqrt() * z0 + (1 - a).sqrt() * s.gamma(t) * (zc - z0)
    torch.testing.assert_close(mean, expected_mean)
    # z_t - mean is sqrt(1-a) eps exactly: variance (1 - a_t) per element
    torch.testing.assert_close(s.q_sample(z0, zc, eps, t) - mean, (1 - a).sqrt() * eps)
    # and empirically, over many draws
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([s.q_sample(z0, zc, torch.randn(z0.shape, generator=g, dtype=torch.float64), t) for _ in range(4000)])
    assert float(draws.var(0).mean()) == pytest.approx(float(1 - a), rel=0.05)


@pytest.mark.parametrize("variant", VARIANTS)
def test_z_N_does_not_depend_on_z0(variant):
    s = ResidualSchedule(residual_steps=300, gamma_variant=variant)
    z0, zc, eps = _latents()
    other = torch.randn_like(z0) * 5
    torch.testing.assert_close(s.q_sample(z0, zc, eps, 300), s.q_sample(other, zc, eps, 300))
    torch.testing.assert_close(s.q_sample(z0, zc, eps, 300), s.start(zc, eps))


@pytest.mark.parametrize("variant", VARIANTS)
def test_x0_is_recovered_from_the_true_noise(variant):
    s = ResidualSchedule(residual_steps=300, gamma_variant=variant)
    z0, zc, eps = _latents()
    for t in (0, 10, 150, 290, 299):
        torch.testing.assert_close(s.predict_x0(s.q_sample(z0, zc, eps, t), eps, zc, t), z0, rtol=1e-7, atol=1e-7)
    # at t = N x0 is unidentifiable and defined as z_c
    torch.testing.assert_close(s.predict_x0(s.q_sample(z0, zc, eps, 300), eps, zc, 300), zc)
    # per-sample timesteps, including N, in one batch
    t = torch.tensor([40, 300])
    x0 = s.predict_x0(s.q_sample(z0, zc, eps, t), eps, zc, t)
    torch.testing.assert_close(x0[0], z0[0], rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(x0[1], zc[1])


def test_ddim_coefficients():
    s = ResidualSchedule(residual_steps=300)
    a_t, a_s = s._a(200), s._a(100)
    iota, zeta, sigma = s.step_coefficients(200, 100)
    assert iota == pytest.approx(float(torch.sqrt((1 - a_s) / (1 - a_t))), rel=1e-12)
    assert zeta == pytest.approx(float(a_s.sqrt() - iota * a_t.sqrt()), rel=1e-12)
    assert sigma == 0
    s1 = ResidualSchedule(residual_steps=300, eta=1.0)
    iota, zeta, sigma = s1.step_coefficients(200, 100)
    assert iota == pytest.approx(float((1 - a_s) / (1 - a_t) * torch.sqrt(a_t / a_s)), rel=1e-9)
    assert sigma == pytest.approx(float(torch.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))), rel=1e-12)
    # single step: zeta = sqrt(a_{n-1}) beta_n / (1 - a_n)
    n = 57
    beta = 1 - s1._a(n) / s1._a(n - 1)
    _, zeta1, _ = s1.step_coefficients(n, n - 1)
    assert zeta1 == pytest.approx(float(s1._a(n - 1).sqrt() * beta / (1 - s1._a(n))), rel=1e-9)


def test_grid_matches_the_official_one_when_S_divides_N():
    s = ResidualSchedule(residual_steps=300)
    s.set_timesteps(3)
    assert s.timesteps.tolist() == [300, 200, 100, 0]
    s = ResidualSchedule(residual_steps=405)
    s.set_timesteps(5)
    assert s.timesteps.tolist() == [405, 324, 243, 162, 81, 0]
    with pytest.raises(ValueError):
        s.set_timesteps(0)


@pytest.mark.parametrize("S,expected_calls", [(1, 0), (2, 1), (3, 2), (5, 4)])
def test_sampler_makes_S_minus_1_calls(S, expected_calls):
    s = ResidualSchedule(residual_steps=300)
    z0, zc, eps = _latents()
    counter = CallCounter(lambda x, t: torch.zeros_like(x))
    residual_ddim_sample(s, counter, zc, eps, S)
    assert counter.calls == expected_calls


def _oracle(s, z0, zc):
    def eps(x, t):  # the noise that produced x from z0 under the forward process
        a = s._a(t)
        return (x - a.sqrt() * z0) / (1 - a).sqrt() - s.gamma(t) * (zc - z0)

    return eps


def test_ddim_step_is_residual_consistent():
    """With eta = 0 and the true noise, a step from q(z_t | z0, zc) lands on q(z_s | z0, zc)."""
    s = ResidualSchedule(residual_steps=300)
    s.set_timesteps(3)
    z0, zc, eps = _latents()
    for t, prev in ((200, 100), (100, 0)):
        x_t = s.q_sample(z0, zc, eps, t)
        x_s = s.step(_oracle(s, z0, zc)(x_t, t), t, x_t, zc)
        torch.testing.assert_close(x_s, s.q_sample(z0, zc, eps, prev), rtol=1e-7, atol=1e-7)


def test_sampler_with_an_oracle_keeps_the_effective_noise():
    """The t = N step uses x0 := z_c; after it, oracle steps keep (x - sqrt(a) z0) / sqrt(1 - a) fixed."""
    s = ResidualSchedule(residual_steps=300)
    z0, zc, eps = _latents()
    out = residual_ddim_sample(s, _oracle(s, z0, zc), zc, eps, 3)
    a1, a0 = s._a(200), s._a(0)
    x1 = a1.sqrt() * zc + (1 - a1).sqrt() * eps  # after the first (network-free) step
    effective = (x1 - a1.sqrt() * z0) / (1 - a1).sqrt()
    torch.testing.assert_close(out, a0.sqrt() * z0 + (1 - a0).sqrt() * effective, rtol=1e-7, atol=1e-7)


def test_schedule_is_a_diffusers_config(tmp_path):
    s = ResidualSchedule(residual_steps=405, gamma_variant="time_varying")
    s.save_pretrained(tmp_path)
    t = ResidualSchedule.from_pretrained(tmp_path)
    assert t.config.residual_steps == 405 and t.config.gamma_variant == "time_varying"
    with pytest.raises(ValueError):
        ResidualSchedule(gamma_variant="other")


def test_the_official_loop_gives_the_same_result_with_two_more_calls():
    """The benchmark's baseline (network at all S+1 grid points) decodes identically."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "benchmarks" / "bench_codec.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s = ResidualSchedule(residual_steps=300)
    z0, zc, eps = _latents()
    ours, official = CallCounter(_oracle(s, z0, zc)), CallCounter(_oracle(s, z0, zc))
    a = residual_ddim_sample(s, ours, zc, eps, 3)
    b = bench.official_loop_sample(s, official, zc, eps, 3)
    torch.testing.assert_close(a, b)
    assert (ours.calls, official.calls) == (2, 4)
