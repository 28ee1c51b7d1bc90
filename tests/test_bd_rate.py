"""BD-rate: exact cases, the bjontegaard package's own example, and published Kodak points
checked against an independent piecewise-cubic (PCHIP) and polynomial (VCEG-M33) integration."""

import json
import math

import numpy as np
import pytest

from resulic.metrics.bd_rate import BDRateError, bd_rate, bd_table, lower_is_better

from .conftest import shared_path

BPP = [0.01, 0.03, 0.07, 0.15]
PSNR = [22.0, 24.5, 26.8, 29.0]
LPIPS = [0.45, 0.30, 0.19, 0.12]


def results(bpp, **metrics):
    return {"name": "x", "results": {"bpp": list(bpp), **{k.replace("_", "-"): list(v) for k, v in metrics.items()}}}


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_identical_curves_give_zero(method):
    r = bd_rate(results(BPP, psnr=PSNR), results(BPP, psnr=PSNR), "psnr", method)
    assert r.value == pytest.approx(0, abs=1e-9) and r.overlap_fraction == 1


@pytest.mark.parametrize("metric, values", [("psnr", PSNR), ("lpips", LPIPS), ("fid", [30, 20, 12, 7])])
def test_a_curve_at_80_percent_of_the_rate_is_exactly_minus_20(metric, values):
    # Same qualities at 0.8x the bits: log-rate differs by log10(0.8) everywhere.
    anchor = results(BPP, **{metric: values})
    test = results([b * 0.8 for b in BPP], **{metric: values})
    assert bd_rate(anchor, test, metric).value == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(test, anchor, metric).value == pytest.approx(25.0, abs=1e-9)


def test_lower_is_better_direction():
    # Better LPIPS (lower) at the same rates must need fewer bits: a negative BD-rate.
    better = results(BPP, lpips=[v * 0.8 for v in LPIPS])
    assert bd_rate(results(BPP, lpips=LPIPS), better, "lpips").value < 0
    assert lower_is_better("lpips-random") and lower_is_better("kid") and not lower_is_better("ms-ssim")


def test_agrees_with_the_packages_example():
    import bjontegaard

    # FAU-LMS/bjontegaard README / example_usage.py, test case 1.
    rate_a, psnr_a = [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]
    rate_t, psnr_t = [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]
    for method in ("akima", "pchip", "cubic"):
        ours = bd_rate(results(rate_a, psnr=psnr_a), results(rate_t, psnr=psnr_t), "psnr", method).value
        assert ours == pytest.approx(bjontegaard.bd_rate(rate_a, psnr_a, rate_t, psnr_t, method=method), abs=1e-9)
        assert -6 < ours < -2  # the test encoder needs a few percent fewer bits


def _pchip_integral(x, y, lo, hi):
    """Integral of the Fritsch–Carlson monotone cubic through (x, y) over [lo, hi], written out
    here (weighted-harmonic interior slopes, three-point end slopes) and integrated per interval
    with Simpson's rule, which is exact for cubics."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    h, m = np.diff(x), np.diff(y) / np.diff(x)
    d = np.zeros_like(x)
    for k in range(1, len(x) - 1):
        if m[k - 1] * m[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])

    def end(h0, h1, m0, m1):
        s = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(s) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(s) > abs(3 * m0):
            return 3 * m0
        return s

    d[0], d[-1] = end(h[0], h[1], m[0], m[1]), end(h[-1], h[-2], m[-1], m[-2])

    def value(t):
        k = min(max(np.searchsorted(x, t) - 1, 0), len(x) - 2)
        s = (t - x[k]) / h[k]
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        return h00 * y[k] + h10 * h[k] * d[k] + h01 * y[k + 1] + h11 * h[k] * d[k + 1]

    cuts = [lo, *[v for v in x if lo < v < hi], hi]
    return sum((b - a) / 6 * (value(a) + 4 * value((a + b) / 2) + value(b)) for a, b in zip(cuts, cuts[1:]))


def _independent_bd_rate(anchor, test, metric, method):
    ra, qa = np.log10(anchor["bpp"]), np.asarray(anchor[metric])
    rt, qt = np.log10(test["bpp"]), np.asarray(test[metric])
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if method == "pchip":
        ia, it = _pchip_integral(qa, ra, lo, hi), _pchip_integral(qt, rt, lo, hi)
    else:  # VCEG-M33: a cubic polynomial of log-rate in quality, integrated analytically
        pa, pt = np.polyint(np.polyfit(qa, ra, 3)), np.polyint(np.polyfit(qt, rt, 3))
        ia, it = np.polyval(pa, hi) - np.polyval(pa, lo), np.polyval(pt, hi) - np.polyval(pt, lo)
    return (10 ** ((it - ia) / (hi - lo)) - 1) * 100


@pytest.mark.parametrize("method", ["pchip", "cubic"])
@pytest.mark.parametrize("metric", ["psnr-rgb", "ms-ssim-rgb"])
def test_published_kodak_points_against_an_independent_integration(method, metric):
    kodak = shared_path("anchors", "kodak")
    jpeg, mbt = kodak / "jpeg.json", kodak / "compressai-mbt2018-mean_mse_cpu.json"
    ours = bd_rate(jpeg, mbt, metric, method)
    expected = _independent_bd_rate(json.loads(jpeg.read_text())["results"], json.loads(mbt.read_text())["results"],
                                    metric, method)
    assert ours.value == pytest.approx(expected, abs=1e-6)
    assert ours.value < -40  # a learned MSE codec needs far fewer bits than JPEG on Kodak


def test_aliases_and_lower_is_better_on_the_resulic_release():
    pfo = shared_path("anchors", "resulic-paper", "ResULIC_Pfo", "kodak.json")
    plain = shared_path("anchors", "resulic-paper", "ResULIC", "kodak.json")
    assert math.isfinite(bd_rate(plain, pfo, "psnr").value)  # 'psnr' key, no -rgb
    assert bd_rate(plain, pfo, "lpips").value < 0  # Pfo improves LPIPS at the same rate


def test_unusable_curves_are_refused_clearly(tmp_path):
    bumpy = results(BPP, psnr=[22, 25, 24, 29])
    with pytest.raises(BDRateError, match="does not get strictly better"):
        bd_rate(results(BPP, psnr=PSNR), bumpy, "psnr")
    with pytest.raises(BDRateError, match="no 'lpips'"):
        bd_rate(results(BPP, psnr=PSNR), results(BPP, psnr=PSNR), "lpips")
    far = results([b * 100 for b in BPP], psnr=[p + 30 for p in PSNR])
    assert math.isnan(bd_rate(results(BPP, psnr=PSNR), far, "psnr").value)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BDRateError, match="bad.json"):
        bd_rate(tmp_path / "bad.json", tmp_path / "bad.json", "psnr")


def test_markdown_table(tmp_path):
    test = tmp_path / "ours.json"
    test.write_text(json.dumps({"name": "ours", "results": {"bpp": [b * 0.5 for b in BPP], "psnr-rgb": PSNR, "lpips": LPIPS}}))
    a1 = tmp_path / "a1.json"
    a1.write_text(json.dumps({"name": "A1", "results": {"bpp": BPP, "psnr-rgb": PSNR, "lpips": LPIPS}}))
    a2 = tmp_path / "a2.json"
    a2.write_text(json.dumps({"name": "A2", "results": {"bpp": BPP, "psnr-rgb": PSNR}}))
    table = bd_table(test, [a1, a2], ["psnr", "lpips"])
    assert "| A1 | -50.0 | -50.0 |" in table and "| A2 | -50.0 | — |" in table and "pchip" in table
