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
    cfg = BaselinesConfig(images=str(folder), codecs=["jpeg", "jpeg2000"], target_bpp=[0.5, 1.0],
                          output_dir=str(tmp_path / "out"))
    paths = run_baselines_job(cfg, progress=False)
    data = json.loads(paths[-1].read_text())
    assert data["name"].startswith("JPEG 2000") and data["target_bpp"] == [0.5, 1.0]
    assert len(data["results"]["bpp"]) == 2 and data["results"]["bpp"][0] <= 0.5
    with pytest.raises(ConfigError, match="unknown"):
        run_baselines_job(BaselinesConfig(images=str(folder), codecs=["bpg"]))
