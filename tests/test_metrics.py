"""Metrics: PSNR and MS-SSIM against hand-computed values; learned metrics' plumbing with random
backbones and with backbone files in the torchvision/torch-fidelity formats; FID/256 patches."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from resulic.metrics import MetricWeights, MetricWeightsError, ms_ssim, psnr
from resulic.metrics.fid import PATCH, extract_patches, fid_kid, patch_count, patch_grid
from resulic.metrics.weights import BACKBONE_FILES

RANDOM = MetricWeights(random_backbones=True)


def flat(value: int, size=(256, 256)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def test_psnr_by_hand():
    # A uniform error of 10 levels: MSE = (10/255)^2, PSNR = 20 log10(25.5).
    assert psnr(flat(100), flat(110)) == pytest.approx(20 * math.log10(25.5), abs=1e-12)
    # Half the pixels off by 2 levels in one channel: MSE = (2/255)^2 / 2 / 3.
    a = np.full((4, 4, 3), 50, np.uint8)
    b = a.copy()
    b[:2, :, 0] += 2
    expected = -10 * math.log10((2 / 255) ** 2 / 6)
    assert psnr(Image.fromarray(a), Image.fromarray(b)) == pytest.approx(expected, abs=1e-12)
    assert psnr(flat(7), flat(7)) == math.inf


def test_ms_ssim_by_hand():
    # Two flat images: every scale's contrast-structure term is exactly 1, so MS-SSIM is the
    # coarsest scale's luminance term to the power of its weight 0.1333.
    x, y = 100 / 255, 110 / 255
    c1 = (0.01 * 1.0) ** 2
    luminance = (2 * x * y + c1) / (x * x + y * y + c1)
    assert ms_ssim(flat(100), flat(110)) == pytest.approx(luminance**0.1333, abs=1e-6)  # float32 window
    assert ms_ssim(flat(100), flat(100)) == pytest.approx(1.0)
    assert math.isnan(ms_ssim(flat(1, (160, 400)), flat(2, (160, 400))))  # too small for 5 scales


@pytest.fixture(scope="module")
def pair(photo):
    degraded = photo.resize((photo.width // 4, photo.height // 4)).resize(photo.size)
    return photo, degraded


@pytest.fixture(scope="module")
def perceptual():
    from resulic.metrics.perceptual import PerceptualMetrics

    return PerceptualMetrics(["lpips", "dists", "st-lpips"], RANDOM)


def test_learned_metrics_with_random_backbones_are_marked(perceptual, pair):
    ref, dec = pair
    same = perceptual(ref, ref)
    diff = perceptual(ref, dec)
    assert set(diff) == {"lpips-random", "dists-random", "st-lpips"}  # ST-LPIPS ships its weights
    assert same["lpips-random"] == pytest.approx(0, abs=1e-7) and same["st-lpips"] == pytest.approx(0, abs=1e-7)
    assert same["dists-random"] == pytest.approx(0, abs=1e-4)
    assert all(diff[k] > same[k] + 1e-4 for k in diff)
    assert perceptual(ref, dec) == diff  # deterministic


def test_missing_backbone_names_the_file(tmp_path, monkeypatch):
    from resulic.metrics.perceptual import build_dists, build_lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESULIC_METRIC_WEIGHTS", raising=False)
    weights = MetricWeights(folder=str(tmp_path))
    with pytest.raises(MetricWeightsError, match="alexnet-owt-7be5be79.pth"):
        build_lpips(weights)
    with pytest.raises(MetricWeightsError, match="vgg16-397923af.pth"):
        build_dists(weights)
    from resulic.metrics.fid import build_inception

    with pytest.raises(MetricWeightsError, match="weights-inception-2015-12-05-6726825d.pth"):
        build_inception(weights)


def test_backbone_files_in_library_format_are_loaded(tmp_path, pair):
    """A file with torchvision's AlexNet keys (values made up here) lands in LPIPS's trunk; the
    result then has the plain metric name."""
    import torchvision

    from resulic.metrics.perceptual import PerceptualMetrics, build_lpips

    torch.manual_seed(5)
    alex = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(alex, tmp_path / BACKBONE_FILES["lpips"])
    weights = MetricWeights(folder=str(tmp_path))
    net = build_lpips(weights)
    trunk = net.net.state_dict()
    assert torch.equal(trunk["slice1.0.weight"], alex["features.0.weight"])
    assert torch.equal(trunk["slice5.10.bias"], alex["features.10.bias"])
    scores = PerceptualMetrics(["lpips"], weights)(*pair)
    assert list(scores) == ["lpips"] and scores["lpips"] > 0


@pytest.mark.parametrize("size, expected", [((768, 512), 8), ((512, 768), 8), ((256, 256), 1), ((383, 383), 1),
                                            ((384, 384), 2), ((1000, 255), 0), ((1024, 1024), 25)])
def test_patch_counts(size, expected):
    w, h = size
    assert patch_count(h, w) == expected


def test_patches_are_the_hific_grid(photo):
    img = photo.resize((640, 400))
    patches = extract_patches(img)
    arr = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    assert patches.dtype == torch.uint8 and patches.shape == (2 + 2, 3, PATCH, PATCH)
    assert patch_grid(400, 640) == [(0, 0), (0, 256), (128, 128), (128, 384)]
    assert torch.equal(patches[1], arr[:, 0:256, 256:512])
    assert torch.equal(patches[3], arr[:, 128:384, 384:640])  # the pass shifted by 128 px


def test_fid_kid_from_features_by_hand():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    shift = np.array([0.5, 0, 0, 0, 0, 0, 0, -0.5])
    same = fid_kid(real, real.copy())
    moved = fid_kid(real, real + shift)
    assert same["fid"] == pytest.approx(0, abs=1e-6)
    # Same covariance, means apart by `shift`: FID = |shift|^2 exactly.
    assert moved["fid"] == pytest.approx(float(shift @ shift), abs=1e-6)
    assert moved["kid"] > same["kid"] and moved["kid_subset_size"] == 300


def test_inception_features_with_random_backbone(pair):
    from resulic.metrics.fid import PatchFeatures

    ref, dec = pair
    big_ref, big_dec = ref.resize((384, 384)), dec.resize((384, 384))
    features = PatchFeatures(RANDOM)
    a, b = features(big_ref), features(big_dec)
    assert a.shape == (2, 2048) and np.isfinite(a).all()
    assert np.abs(a - b).max() > 1e-3  # a random but non-degenerate network still tells them apart
    assert np.array_equal(a, features(big_ref))
