"""Classical baselines: each installed codec bisected to a target bpp on a small photo, with real
bytes; the JSON they write is in the shared results format."""

import json

import pytest

from resulic.baselines import CODECS, BaselinesConfig, available, codec_spec, encode_at, run_baselines_job, bpp_of
from resulic.errors import ConfigError
from resulic.metrics.distortion import psnr

TARGET = 0.3


@pytest.fixture(scope="module")
def small(photo):
    return photo.crop((0, 0, 160, 120))


@pytest.mark.parametrize("codec", CODECS)
def test_codec_reaches_the_target_with_real_bytes(codec, small):
    reason = available(codec)
    if reason:
        pytest.skip(f"{codec}: {reason}")
    spec = codec_spec(codec, vvc_preset="faster")
    enc = encode_at(small, spec, TARGET)
    bpp = bpp_of(enc, small)
    assert bpp == len(enc.data) * 8 / (160 * 120)
    lowest = spec.run(small, spec.lo)
    if bpp_of(lowest, small) <= TARGET:
        assert bpp <= TARGET
        # Bisection lands near the target, not on the lowest setting.
        assert bpp > 0.5 * TARGET or enc.knob == spec.hi
    else:
        assert enc.knob == spec.lo  # cannot go that low: the lowest setting, its real bpp
    assert enc.image.size == small.size and enc.image.mode == "RGB"
    assert 15 < psnr(small, enc.image) < 60


def test_job_writes_results_and_skips_unknown(tmp_path, photo, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    photo.crop((0, 0, 96, 64)).save(folder / "a.png")
    cfg = BaselinesConfig(images=str(folder), codecs=["jpeg", "jpeg2000"], target_bpp=[0.1, 0.2, 1.0],
                          output_dir=str(tmp_path / "out"))
    paths = run_baselines_job(cfg, progress=False)
    jpeg, j2k = (json.loads(p.read_text()) for p in paths)
    assert j2k["name"].startswith("JPEG 2000") and jpeg["results"]["bpp"][-1] <= 1.0
    # JPEG's lowest setting gives ~0.49 bpp here: 0.1 and 0.2 land on the same point, kept once.
    assert jpeg["target_bpp"] == [0.1, 1.0] and jpeg["targets_repeating_previous"] == [0.2]
    assert jpeg["knob"][0] == [1] and len(jpeg["results"]["psnr-rgb"]) == 2
    assert jpeg["results"]["bpp"][0] < jpeg["results"]["bpp"][1]
    with pytest.raises(ConfigError, match="unknown"):
        run_baselines_job(BaselinesConfig(images=str(folder), codecs=["bpg"]))
