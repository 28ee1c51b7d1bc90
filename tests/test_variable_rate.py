"""One model for every rate (issue 17): the gain vectors and their rate level, the level in the
file, per-image rate control (--bpp), one-pass decoding, training over the λ_R range, and the
folders that hold such a model. Tiny profile throughout."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from resulic.config import RATE_LEVELS, ModelConfig
from resulic.errors import BitstreamError, ConfigError

VARIABLE = {"lambda_rates": [8.0, 2.0, 0.5], "residual_steps": [60, 40, 20], "default_level": 64}


def variable_config(**rate_point) -> ModelConfig:
    return ModelConfig.model_validate({
        "compressor": {"gain_anchors": 3},
        "rate_point": {"name": "vr", "residual_steps": 50, "sampling_steps": 2, "variable": VARIABLE, **rate_point},
    })


@pytest.fixture(scope="module")
def vcodec():
    from resulic.codec import Codec

    return Codec.build(variable_config())


@pytest.fixture(scope="module")
def small_photo(photo):
    return photo.crop((0, 0, 128, 128))


# -- config ----------------------------------------------------------------------------------
def test_fixed_rate_configs_and_fingerprints_do_not_change():
    dumped = ModelConfig().canonical_json()
    assert "gain_anchors" not in dumped and "variable" not in dumped


@pytest.mark.parametrize("change, message", [
    ({"compressor": {"gain_anchors": 2}}, "gain anchors"),
    ({"rate_point": {"variable": {**VARIABLE, "lambda_rates": [1.0, 2.0, 3.0]}}}, "must decrease"),
    ({"rate_point": {"variable": {**VARIABLE, "residual_steps": [10, 20]}}}, "2 values for 3 anchors"),
    ({"rate_point": {"variable": {**VARIABLE, "residual_steps": [60, 40, 1]}}}, "below sampling_steps"),
    ({"compressor": {"gain_anchors": 1}}, "at least 2 anchors"),
])
def test_bad_variable_rate_configs_name_the_key(change, message):
    from resulic.config import load_config

    data = yaml.safe_load(yaml.safe_dump(variable_config().model_dump(mode="json")))
    for section, values in change.items():
        data[section].update(values)
    with pytest.raises(ConfigError, match=message):
        load_config(ModelConfig, None, [f"{k}={json_value}" for k, json_value in _flat(data)])


def _flat(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict) and key != "variable":
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", yaml.safe_dump(value, default_flow_style=True).strip()


def test_interpolation_of_lambda_and_residual_steps():
    v = variable_config().rate_point.variable
    assert v.position(0) == 0 and v.position(RATE_LEVELS) == 2
    assert v.lambda_at(0) == pytest.approx(8.0) and v.lambda_at(2) == pytest.approx(0.5)
    assert v.lambda_at(0.5) == pytest.approx(4.0)  # geometric between 8 and 2
    assert v.residual_steps_at(0) == 60 and v.residual_steps_at(RATE_LEVELS) == 20
    assert v.residual_steps_at(RATE_LEVELS // 4) == round(60 - 20 * (RATE_LEVELS // 4) / RATE_LEVELS * 2)
    with pytest.raises(ValueError, match="outside 0..127"):
        v.position(128)


# -- the compressor's gains ------------------------------------------------------------------
def test_gains_interpolate_between_anchors_in_the_log_domain(vcodec):
    comp = vcodec.compressor
    g0, _ = comp.gains(0.0)
    g1, _ = comp.gains(1.0)
    half, inverse = comp.gains(0.5)
    assert torch.allclose(half, (g0 * g1).sqrt(), rtol=1e-5)
    # initialised as sqrt(λ_ref / λ_k) around the anchors' geometric mean: lower λ, finer steps
    assert g0.mean() < g1.mean() < comp.gains(2.0)[0].mean()
    assert torch.allclose(inverse * half, torch.ones_like(half))
    with pytest.raises(ValueError, match="variable rate"):
        comp.gains(None)


def test_a_fixed_rate_compressor_refuses_a_level(codec, photo):
    with pytest.raises(ValueError, match="fixed rate"):
        codec.encode(photo, level=3)


# -- the level in the file -------------------------------------------------------------------
def test_level_round_trips_through_the_file_and_costs_two_bytes(vcodec, small_photo):
    from resulic.codec.container import unpack

    default = vcodec.encode(small_photo)
    assert default.level == VARIABLE["default_level"] and unpack(default.data).header.level is None
    low, high = vcodec.encode(small_photo, level=0), vcodec.encode(small_photo, level=RATE_LEVELS)
    assert unpack(low.data).header.level == 0 and unpack(high.data).header.level == RATE_LEVELS
    assert len(low.data) < len(default.data) < len(high.data)
    header_bytes = len(low.data) - len(unpack(low.data).latent)
    assert header_bytes == 12 + 2  # the default file's 12, plus the override mask and the level
    for result, level in ((low, 0), (high, RATE_LEVELS), (default, None)):
        decoded = vcodec.decode(result.data)
        assert decoded.header.level == level and decoded.image.size == small_photo.size
    # the level sets N_r: a file may not ask for more steps than its level's N_r
    assert vcodec.schedule_for(0).N == 60 and vcodec.schedule_for(RATE_LEVELS).N == 20
    with pytest.raises(ValueError, match="1..20"):
        vcodec.encode(small_photo, level=RATE_LEVELS, steps=21)


def test_a_level_in_a_fixed_rate_models_file_is_refused(codec, vcodec, small_photo):
    from resulic.codec.container import Container, pack, unpack

    c = unpack(codec.encode(small_photo).data)
    forged = pack(Container(c.header.__class__(**{**c.header.__dict__, "level": 5}), c.text, c.latent))
    with pytest.raises(BitstreamError, match="fixed rate"):
        codec.decode(forged)


def test_container_level_bounds():
    from resulic.codec.container import Container, Header, pack, unpack

    h = Header(b"\0\0\0\0", 10, 10, level=RATE_LEVELS)
    assert unpack(pack(Container(h, b"", b"\1"))).header.level == RATE_LEVELS
    with pytest.raises(ValueError, match="outside"):
        pack(Container(Header(b"\0\0\0\0", 10, 10, level=RATE_LEVELS + 1), b"", b"\1"))
    body = bytearray(pack(Container(h, b"", b"\1")))
    body[9] = 0x80 | 0x7F  # the level varint made two bytes long: 255 > 127
    with pytest.raises(BitstreamError):
        unpack(bytes(body))


# -- rate control ----------------------------------------------------------------------------
def test_bpp_target_lands_closest_without_passing_it_by_more_than_5_percent(vcodec, small_photo):
    from resulic.codec.rate_control import OVER, encode_to_bpp

    every = {lv: vcodec.encode(small_photo, level=lv).bpp for lv in range(0, RATE_LEVELS + 1)}
    lo, hi = min(every.values()), max(every.values())
    for target in (lo * 1.3, math.sqrt(lo * hi), hi * 0.8):
        result, search = encode_to_bpp(vcodec, small_photo, target)
        assert result.bpp <= target * (1 + OVER)
        best = min(abs(b - target) for b in every.values() if b <= target * (1 + OVER))
        assert abs(result.bpp - target) == pytest.approx(best)
        assert search.encodes <= 2 + 8 and result.level == search.level
        assert vcodec.decode(result.data).header.level in (search.level, None)


@pytest.mark.parametrize("target, message", [
    (0, "positive"), (-0.1, "positive"), (float("nan"), "positive"),
    (1e-6, "below this model's range"), (200.0, "above this model's range"),
])
def test_bpp_targets_outside_the_range_are_clear_errors(vcodec, small_photo, target, message):
    from resulic.codec.rate_control import encode_to_bpp

    with pytest.raises(ValueError, match=message):
        encode_to_bpp(vcodec, small_photo, target)


def test_bpp_on_a_fixed_rate_model_says_so(codec, small_photo):
    from resulic.codec.rate_control import encode_to_bpp

    with pytest.raises(ValueError, match="fixed rate"):
        encode_to_bpp(codec, small_photo, 0.1)


# -- one-pass decoding -----------------------------------------------------------------------
def test_one_pass_is_one_network_evaluation(vcodec, small_photo):
    data = vcodec.encode(small_photo, steps=3, guidance=3.0).data
    assert vcodec.decode(data).network_evaluations == 2 * 2  # S=3: S-1 calls, both CFG branches
    assert vcodec.decode(data, one_pass=True).network_evaluations == 1
    asked = vcodec.encode(small_photo, steps=2, guidance=1.0).data  # a file that asks for it
    assert vcodec.decode(asked).network_evaluations == 1


# -- training over the λ range ---------------------------------------------------------------
def test_training_loss_weights_each_sample_by_its_own_lambda(vcodec):
    from resulic.train.config import LossConfig
    from resulic.train.model import LossDraw, TrainableCodec

    cfg = vcodec.config
    trainable = TrainableCodec(cfg, vcodec.backbone, vcodec.compressor, vcodec.cdm, 1,
                               LossConfig(lambda_eps=0), lambda_rate=1.0).eval()
    z0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 128, 128)
    positions = torch.tensor([0.0, 2.0])
    with torch.no_grad():
        terms = trainable(images, ["", ""], z0, LossDraw(torch.zeros(2, dtype=torch.long), torch.zeros_like(z0),
                                                     positions=positions))
    with torch.no_grad():
        out = vcodec.compressor(z0, positions)
    bits = [sum((-torch.log2(lk[i])).sum() for lk in out["likelihoods"].values()) for i in range(2)]
    expected = (8.0 * bits[0] + 0.5 * bits[1]) / 2 / (128 * 128) + torch.mean((out["z_c"] - z0) ** 2)
    assert float(terms["loss"]) == pytest.approx(float(expected), rel=1e-4)


def test_each_sample_trains_on_the_residual_schedule_its_level_decodes_with(vcodec):
    """N_r follows the rate position in training as it follows the level in decoding: a sample at
    the lowest anchor is noised on that anchor's schedule, one at the top on the top's."""
    import torch.nn.functional as F

    from resulic.config import RATE_LEVELS
    from resulic.train.config import LossConfig
    from resulic.train.model import LossDraw, TrainableCodec

    cfg = vcodec.config
    trainable = TrainableCodec(cfg, vcodec.backbone, vcodec.compressor, vcodec.cdm, 1, LossConfig(), lambda_rate=1.0).eval()
    positions = torch.tensor([0.0, float(cfg.rate_point.variable.anchors - 1)])
    n_r = trainable.residual_steps(positions)
    assert n_r == [vcodec.schedule_for(0).N, vcodec.schedule_for(RATE_LEVELS).N] and n_r[0] != n_r[1]
    draws = trainable.draw(torch.zeros(4000, 1, 1, 1), positions.repeat(2000)).timesteps.view(2000, 2)
    assert draws.min() == 0 and [int(m) for m in draws.max(0).values] == n_r  # U{0..N_r} per sample

    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(2, 4, 16, 16, generator=g)
    noise = torch.randn(2, 4, 16, 16, generator=g)
    n = torch.tensor([n_r[0] - 1, n_r[1] - 1])
    with torch.no_grad():
        terms = trainable(torch.rand(2, 3, 128, 128), ["", ""], z0, LossDraw(n, noise, positions=positions))
        z_c = vcodec.compressor(z0, positions)["z_c"]
        context = vcodec.backbone.encode_text(["", ""])
        z_n = torch.cat([trainable.schedule_for(n_r[i]).q_sample(z0[i : i + 1], z_c[i : i + 1], noise[i : i + 1], n[i : i + 1])
                         for i in range(2)])
        eps = vcodec.cdm(z_n, n, encoder_hidden_states=context, controlnet_cond=z_c).sample
    assert float(terms["loss_eps"]) == pytest.approx(float(F.mse_loss(eps, noise)), rel=1e-5)


def test_a_position_range_draws_every_sample_inside_it_and_is_validated(vcodec):
    """loss.position_range: a run that trains one tier of a tiered release spends every sample in
    its rate range; a range past the last anchor, reversed, or on a fixed-rate model is refused."""
    from resulic.train.config import LossConfig, TrainConfig
    from resulic.train.model import TrainableCodec

    cfg = vcodec.config
    trainable = TrainableCodec(cfg, vcodec.backbone, vcodec.compressor, vcodec.cdm, 1,
                               LossConfig(position_range=(0.25, 0.75)), lambda_rate=1.0)
    positions = trainable.draw_positions(5000, "cpu")
    assert 0.25 <= float(positions.min()) < 0.26 and 0.74 < float(positions.max()) <= 0.75
    whole = TrainableCodec(cfg, vcodec.backbone, vcodec.compressor, vcodec.cdm, 1, LossConfig(), lambda_rate=1.0)
    assert float(whole.draw_positions(5000, "cpu").max()) > 1.9  # default: every anchor (3 here: 0..2)
    model = cfg.model_dump()
    TrainConfig.model_validate({"model": model, "loss": {"position_range": [0, 2]}})
    for loss, match in (({"position_range": [0, 2.5]}, "past the last anchor"),
                        ({"position_range": [1, 0.5]}, "low <= high")):
        with pytest.raises(ValueError, match="position_range") as info:
            TrainConfig.model_validate({"model": model, "loss": loss})
        assert match in str(info.value)
    with pytest.raises(ValueError, match="needs a variable-rate model"):
        TrainConfig.model_validate({"loss": {"position_range": [0, 1]}})


def test_gains_train_at_their_own_rate_without_weight_decay(vcodec):
    """Adam moves a parameter by about its lr per step: the gains get optim.gain_lr (an anchor
    must travel far from where a fixed-rate model put it), and no decay towards gain 1."""
    from types import SimpleNamespace

    from resulic.models.compressor import build_compressor
    from resulic.train.config import LossConfig, OptimConfig
    from resulic.train.loop import _optimizers
    from resulic.train.model import TrainableCodec

    compressor = build_compressor(vcodec.config)  # fresh: the module's codec stays as it is
    trainable = TrainableCodec(vcodec.config, vcodec.backbone, compressor, vcodec.cdm, 1,
                               LossConfig(lambda_eps=0), lambda_rate=1.0).train()
    groups = trainable.parameter_groups()
    assert [id(p) for p in groups["gains"]] == [id(compressor.log_gain), id(compressor.log_inverse_gain)]
    optimizer = _optimizers(trainable, SimpleNamespace(optim=OptimConfig(lr=1e-5, gain_lr=0.05, weight_decay=0.5)))["main"]
    by_lr = {g["lr"]: g for g in optimizer.param_groups}
    assert by_lr[0.05]["weight_decay"] == 0.0 and by_lr[1e-5]["weight_decay"] == 0.5

    before, weight = compressor.log_gain.detach().clone(), compressor.g_a[0].skip.weight.detach().clone()
    z0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    trainable(torch.rand(2, 3, 128, 128), ["", ""], z0)["total"].backward()
    optimizer.step()
    moved = (compressor.log_gain.detach() - before).abs()
    assert moved.max() == pytest.approx(0.05, rel=1e-3)  # Adam's first step: lr x sign(grad)
    assert (compressor.g_a[0].skip.weight.detach() - weight).abs().max() < 1e-4


def test_a_variable_model_starts_from_a_fixed_rate_one(tmp_path, codec):
    from resulic.codec.store import save_codec
    from resulic.train.checkpoint import parts_from_folder

    save_codec(codec, tmp_path / "fixed")
    cfg = codec.config.model_copy(update={
        "compressor": codec.config.compressor.model_copy(update={"gain_anchors": 3}),
        "rate_point": variable_config().rate_point,
    })
    compressor, _ = parts_from_folder(tmp_path / "fixed", cfg, codec.backbone, reference_lambda=2.0)
    assert torch.equal(compressor.g_a[0].skip.weight, codec.compressor.g_a[0].skip.weight)
    expected = [0.5 * math.log(2.0 / lam) for lam in VARIABLE["lambda_rates"]]
    assert compressor.log_gain[:, 0].tolist() == pytest.approx(expected, rel=1e-5)


def test_reset_gains_moves_a_variable_models_anchors_and_keeps_everything_else(tmp_path, vcodec):
    from resulic.codec.store import save_codec
    from resulic.train.checkpoint import parts_from_folder
    from resulic.train.config import TrainConfig

    with torch.no_grad():
        vcodec.compressor.log_gain.add_(0.3)  # as if trained away from their start (restored below)
    try:
        save_codec(vcodec, tmp_path / "vr")
    finally:
        with torch.no_grad():
            vcodec.compressor.log_gain.sub_(0.3)
    moved = [40.0, 4.0, 0.4]
    cfg = vcodec.config.model_copy(update={"rate_point": vcodec.config.rate_point.model_copy(update={
        "variable": vcodec.config.rate_point.variable.model_copy(update={"lambda_rates": moved})})})
    kept, _ = parts_from_folder(tmp_path / "vr", cfg, vcodec.backbone, reference_lambda=0.3)
    assert torch.allclose(kept.log_gain, vcodec.compressor.log_gain + 0.3)  # trained gains are kept by default
    reset, _ = parts_from_folder(tmp_path / "vr", cfg, vcodec.backbone, reference_lambda=0.3, reset_gains=True)
    expected = torch.tensor([0.5 * math.log(0.3 / lam) for lam in moved])
    assert torch.allclose(reset.log_gain, expected[:, None].expand_as(reset.log_gain), atol=1e-6)
    assert torch.allclose(reset.log_inverse_gain, -reset.log_gain)
    assert torch.equal(reset.g_a[0].skip.weight, vcodec.compressor.g_a[0].skip.weight)
    with pytest.raises(ValueError, match="reset_gains"):
        TrainConfig.model_validate({"reset_gains": True})  # nothing to reset: no init_from


# -- folders ---------------------------------------------------------------------------------
def test_folders_hold_weights_only_and_reload_bit_exact(tmp_path, vcodec, small_photo):
    from safetensors.torch import load_file

    from resulic.codec.store import DERIVED_BUFFERS, load_codec, save_codec

    save_codec(vcodec, tmp_path / "vr")
    saved = load_file(tmp_path / "vr" / "compressor.safetensors")
    assert "log_gain" in saved and not any(k.rpartition(".")[2] in DERIVED_BUFFERS for k in saved)
    again = load_codec(tmp_path / "vr", backbone=vcodec.backbone)
    assert again.fingerprint == vcodec.fingerprint  # the rebuilt coding tables are the same
    data = vcodec.encode(small_photo, level=100).data
    assert again.encode(small_photo, level=100).data == data


def test_pfo_scores_the_decode_at_the_files_level(vcodec, small_photo):
    """Pfo judges tokens by decoding z_c as the receiver will: at a non-default level, with that
    level's N_r (here 60, against 40 at the default level)."""
    from resulic.config import PfoConfig
    from resulic.images import image_to_tensor
    from resulic.semantics.pfo import Metric, optimize_prompt
    from resulic.semantics.prompt import text_token_ids

    ids = text_token_ids(vcodec.backbone.tokenizer, "a red house")
    z_c = vcodec.compressor.compress(vcodec.latent_of(small_photo), vcodec.rate_position(0)).z_c
    x = image_to_tensor(small_photo)
    metric = Metric("psnr", torch.device("cpu"))

    def psnr(level):
        S, w, seed = vcodec.settings(None, None, None)
        z, _ = vcodec.sample(z_c, ids, S, w, seed, level=level)
        return metric.value(metric.loss(vcodec.backbone.decode(z)[..., :128, :128], x))

    run = optimize_prompt(vcodec, small_photo, z_c, ids, PfoConfig(iterations=1, progress=False), level=0)
    assert run.initial_score == pytest.approx(psnr(0), abs=1e-9)
    assert abs(psnr(0) - psnr(None)) > 1e-3  # the test can tell the levels apart


# -- evaluation ------------------------------------------------------------------------------
def test_evaluate_draws_a_variable_models_curve_from_its_levels(tmp_path, codec, vcodec, small_photo):
    """`resulic evaluate --level ...`: each level of a variable-rate model is a rate point of
    its own (its files carry that level); a fixed-rate model beside it is evaluated once."""
    from resulic.codec.store import save_codec
    from resulic.codec.container import unpack
    from resulic.evaluation.evaluate import EvaluateConfig, evaluate

    save_codec(vcodec, tmp_path / "vr")
    save_codec(codec, tmp_path / "fixed")
    (tmp_path / "images").mkdir()
    small_photo.save(tmp_path / "images" / "a.png")
    cfg = EvaluateConfig(models=[str(tmp_path / "fixed"), str(tmp_path / "vr")], levels=[127, 0, 127],
                         images=str(tmp_path / "images"), output_dir=str(tmp_path / "out"), num_workers=0,
                         metrics={"names": ["psnr"]})
    results = evaluate(cfg, progress=False).results
    points = {(rp["model"], rp["level"]): rp["label"] for rp in results["rate_points"]}
    assert set(points) == {(str(tmp_path / "fixed"), None), (str(tmp_path / "vr"), 0), (str(tmp_path / "vr"), 127)}
    for level in (0, 127):
        data = (tmp_path / "out" / points[(str(tmp_path / "vr"), level)] / "a.rslc").read_bytes()
        assert unpack(data).header.level == level
    bpps = {rp["level"]: bpp for rp, bpp in zip(results["rate_points"], results["results"]["bpp"])}
    assert bpps[0] < bpps[127]


def test_evaluate_levels_need_a_variable_model(tmp_path, codec):
    from resulic.codec.store import save_codec
    from resulic.evaluation.evaluate import EvaluateConfig, evaluate

    with pytest.raises(Exception, match=r"levels.*0\.\.127"):
        EvaluateConfig(levels=[128])
    save_codec(codec, tmp_path / "fixed")
    cfg = EvaluateConfig(models=[str(tmp_path / "fixed"), "tiny"], levels=[3], images="samples", max_images=1, crop=64,
                         output_dir=str(tmp_path / "out"), num_workers=0, metrics={"names": ["psnr"]})
    with pytest.raises(ConfigError, match="levels: none of the models is a variable-rate model"):
        evaluate(cfg, progress=False)
    assert not (tmp_path / "out" / "rp0").exists()  # refused before any model was evaluated


# -- the command line ------------------------------------------------------------------------
def _resulic(*args, cwd):
    exe = Path(sys.executable).with_name("resulic")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--bpp", "0"], "--bpp 0: must be a positive"),
    (["--bpp", "-1"], "must be a positive"),
    (["--level", "128"], "--level 128: must be in 0..127"),
    (["--bpp", "0.1", "--rate", "r2"], "use one or the other"),
    (["--bpp", "0.1", "--level", "3"], "not allowed with argument"),
])
def test_cli_refuses_bad_rate_arguments(tmp_path, small_photo, args, message):
    small_photo.save(tmp_path / "a.png")
    out = _resulic("compress", "a.png", *args, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_cli_bpp_and_one_pass_round_trip(tmp_path, vcodec, small_photo, monkeypatch, capsys):
    """The same commands run in this process (a `resulic` process costs seconds of imports each;
    the refusals above and tests/test_cli_startup.py run the process itself)."""
    from resulic.cli.commands import main
    from resulic.codec.store import save_codec

    save_codec(vcodec, tmp_path / "vr")
    small_photo.save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    target = vcodec.encode(small_photo, level=90).bpp
    code = main(["compress", "a.png", "-o", "a.rslc", "--model", "vr", "--bpp", f"{target:.6f}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "level" in out.out and f"target {float(f'{target:.6f}'):g} bpp" in out.out
    assert (tmp_path / "a.rslc").stat().st_size * 8 / (128 * 128) <= target * 1.05 + 1e-9
    code = main(["decompress", "a.rslc", "-o", "a-decoded.png", "--model", "vr", "--one-pass"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "a-decoded.png").is_file()
    code = main(["compress", "a.png", "-o", "b.rslc", "--bpp", "0.1"])  # tiny ($RESULIC_MODEL): fixed rate
    assert code == 2 and "fixed rate" in capsys.readouterr().err
