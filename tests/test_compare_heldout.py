"""The release gate's pointwise comparison (benchmarks/compare_heldout.py): where a BD-rate over
the shared range can hide a stretch where the candidate is behind, each candidate level is set
against the baseline at the same bpp."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def gate():
    spec = importlib.util.spec_from_file_location("gate", Path(__file__).parents[1] / "benchmarks" / "compare_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_baseline_is_interpolated_in_log_bpp_at_each_candidate_rate(gate):
    base = {"bpp": [0.04, 0.01, 0.16], "psnr": [16.0, 14.0, 18.0]}  # any order
    cand = {"bpp": [0.005, 0.02, 0.08, 0.5], "psnr": [12.0, 15.5, 16.5, 22.0]}
    rows = gate.at_equal_rate(base, cand, "psnr")
    assert [r[0] for r in rows] == [1, 2]  # 0.005 and 0.5 lie outside the baseline's range
    (_, bpp, q, ref), (_, _, q2, ref2) = rows
    assert bpp == 0.02 and ref == pytest.approx(15.0) and ref2 == pytest.approx(17.0)  # halfway in log bpp
    assert gate.behind(rows, lower_is_better=False) == [2]  # 16.5 < 17.0; 15.5 > 15.0


def test_lower_is_better_metrics_are_behind_when_higher(gate):
    base = {"bpp": [0.01, 0.1], "st-lpips": [0.4, 0.2]}
    cand = {"bpp": [0.01, np.sqrt(0.001), 0.1], "st-lpips": [0.39, 0.31, 0.2]}
    rows = gate.at_equal_rate(base, cand, "st-lpips")
    assert [round(r[3], 6) for r in rows] == [0.4, 0.3, 0.2]
    assert gate.behind(rows, lower_is_better=True) == [1]


def test_a_point_a_hair_outside_the_other_curve_is_compared_with_its_end(gate):
    base = {"bpp": [0.01159, 0.04], "psnr": [15.2, 16.5]}
    cand = {"bpp": [0.01162, 0.0167, 0.05], "psnr": [13.5, 16.1, 17.0]}
    assert [r[0] for r in gate.at_equal_rate(base, cand, "psnr")] == [0, 1]  # 0.05 is 25 % beyond
    found = gate.verdict(base, cand, {"psnr": False})
    assert found["behind"] == [0] and found["behind_baseline"] == [0] and found["unreached"] == []


def test_the_verdict_sets_each_baseline_point_against_the_candidate_and_fails_an_unreached_rate(gate):
    # The candidate's points are all ahead, but its curve dips below the baseline's middle point,
    # and it never reaches the baseline's lowest rate.
    base = {"bpp": [0.005, 0.02, 0.04, 0.08], "psnr": [12.0, 15.0, 18.0, 19.0]}
    cand = {"bpp": [0.01, 0.08], "psnr": [14.0, 19.5]}
    found = gate.verdict(base, cand, {"psnr": False})
    assert found["behind"] == []  # 14.0 against 13.5 at 0.01; 19.5 against 19.0
    assert found["behind_baseline"] == [2]  # the candidate's line: 15.83 at 0.02 (ahead), 17.67 at 0.04 (behind)
    assert found["unreached"] == [0]
    ahead = {"bpp": [0.005, 0.08], "psnr": [12.5, 22.0]}
    assert gate.verdict(base, ahead, {"psnr": False}) == {"behind": [], "behind_baseline": [], "unreached": []}


def test_a_prior_is_judged_through_the_same_trained_parts(gate, tmp_path, photo):
    """--candidate-prior: the folder's trained parts and bits, decoded through another stage-0
    prior — the backbone it names is the one loaded (the bundled prior from its own path is the
    shipped backbone; another prior another one, with the same latent bits)."""
    from resulic.codec.store import load_codec
    from resulic.models.backbone import SMALL_PRIOR, random_small_prior, save_prior

    folder = Path(__file__).parents[1] / "platform" / "resulic" / "weights" / "small-codecs" / "v1"
    shipped = load_codec(folder)
    assert gate.with_prior(folder, SMALL_PRIOR).backbone.identity == shipped.backbone.identity
    other = gate.with_prior(folder, save_prior(random_small_prior(7), tmp_path / "prior"))
    assert other.backbone.identity != shipped.backbone.identity
    from resulic.codec.container import unpack

    image = photo.crop((0, 0, 128, 128))
    a, b = (unpack(codec.compress(image, level=10)) for codec in (shipped, other))
    assert a.latent == b.latent and a.header.fingerprint != b.header.fingerprint
