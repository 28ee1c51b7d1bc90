"""Two trained variable-rate models behind one rate level (``rate_point.low_tier``,
resulic/codec/tiers.py): the routing of levels, bits identical to each tier's own model, folders
that reload bit-exact, and the configs and commands that refuse what cannot work. Tiny profile."""

from __future__ import annotations

import pytest

from resulic.codec.container import unpack
from resulic.config import RATE_LEVELS, ModelConfig

MAIN = {"lambda_rates": [8.0, 2.0, 0.5], "residual_steps": [60, 40, 20], "default_level": 64}
LOW = {"lambda_rates": [64.0, 16.0], "residual_steps": [90, 70], "default_level": 0}


def variable_config(variable: dict, seed: int = 1) -> ModelConfig:
    return ModelConfig.model_validate({
        "compressor": {"gain_anchors": len(variable["lambda_rates"]), "seed": seed},
        "rate_point": {"name": "vr", "residual_steps": 50, "sampling_steps": 2, "variable": variable},
    })


@pytest.fixture(scope="module")
def tiers():
    from resulic.codec import Codec
    from resulic.codec.tiers import assemble

    main = Codec.build(variable_config(MAIN))
    low = Codec.build(variable_config(LOW, seed=7), backbone=main.backbone)
    return main, low, assemble(main, low, levels=4, own_levels=(0, 30), main_from=20)


@pytest.fixture(scope="module")
def small_photo(photo):
    return photo.crop((0, 0, 128, 128))


def test_levels_route_to_each_tiers_own_levels(tiers):
    _, _, tiered = tiers
    rp = tiered.config.rate_point
    assert [r.tier for r in map(rp.route, (0, 3, 4, RATE_LEVELS))] == ["low", "low", "main", "main"]
    assert rp.route(0).position == 0.0 and rp.route(3).position == pytest.approx(30 / RATE_LEVELS)  # LOW: 2 anchors
    assert rp.route(4).position == pytest.approx(20 / RATE_LEVELS * 2) and rp.route(RATE_LEVELS).position == 2.0
    assert rp.route(0).residual_steps == 90 and rp.route(RATE_LEVELS).residual_steps == 20  # each tier's own N_r
    assert rp.max_residual_steps == 90
    assert rp.route(None) == rp.route(64)  # the main model's default level
    with pytest.raises(ValueError, match="outside 0..127"):
        rp.route(RATE_LEVELS + 1)


def test_each_tier_codes_exactly_the_bits_of_its_own_model(tiers, small_photo):
    main, low, tiered = tiers
    for level, own, own_level in ((0, low, 0), (3, low, 30), (4, main, 20), (RATE_LEVELS, main, RATE_LEVELS)):
        ours, theirs = tiered.encode(small_photo, level=level), own.encode(small_photo, level=own_level)
        assert unpack(ours.data).latent == unpack(theirs.data).latent, level
        assert unpack(ours.data).header.level == (None if level == 64 else level)
    decoded = tiered.decode(tiered.encode(small_photo, level=4).data)
    same = main.decode(main.encode(small_photo, level=20).data)  # same z_c, N_r and control module
    assert decoded.image.tobytes() == same.image.tobytes()


def test_a_tiered_folder_reloads_bit_exact_with_its_own_fingerprint(tiers, small_photo, tmp_path):
    from resulic.codec.store import load_codec, save_codec

    main, _, tiered = tiers
    save_codec(tiered, tmp_path / "tiered")
    again = load_codec(tmp_path / "tiered")
    assert again.fingerprint == tiered.fingerprint != main.fingerprint
    assert again.encode(small_photo, level=1).data == tiered.encode(small_photo, level=1).data


@pytest.mark.parametrize("change, message", [
    ({"variable": None}, "low_tier: only a variable-rate model"),
    ({"low_tier": {"own_levels": [9, 3]}}, "own_levels"),
    ({"low_tier": {"levels": RATE_LEVELS}}, "levels"),
    ({"low_tier": {"variable": {"lambda_rates": [9.0, 3.0, 1.0], "residual_steps": [9, 9, 9]}}}, "2 gain anchors"),
    ({"low_tier": {"variable": {"residual_steps": [90, 1]}}}, "low_tier.variable.residual_steps"),
])
def test_bad_tier_configs_name_the_key(tiers, change, message):
    data = tiers[2].config.model_dump(mode="json")
    rate_point = data["rate_point"]
    for key, value in change.items():
        if isinstance(value, dict):
            for k, v in value.items():
                rate_point[key][k] = {**rate_point[key][k], **v} if isinstance(v, dict) else v
        else:
            rate_point[key] = value
    if rate_point["variable"] is None:
        data["compressor"].pop("gain_anchors")
    with pytest.raises(ValueError, match=message):
        ModelConfig.model_validate(data)


def test_a_tiered_models_compressors_are_assembled_not_trained(tiers):
    from resulic.train.config import TrainConfig

    model = tiers[2].config.model_dump(mode="json")
    with pytest.raises(ValueError, match="model: rate_point.low_tier"):
        TrainConfig.model_validate({"model": model})
    TrainConfig.model_validate({"model": model, "optim": {"freeze_compressor": True}})


def test_a_tiered_models_shared_control_module_trains_on_both_tiers_latents(tiers):
    """optim.freeze_compressor on a tiered model: each sample's z_c is the one its level's tier
    codes (the decoder's), noised on that level's N_r; the control module alone learns, and a
    snapshot is the same tiered codec."""
    import torch
    import torch.nn.functional as F

    from resulic.train.checkpoint import snapshot_codec
    from resulic.train.config import LossConfig
    from resulic.train.model import LossDraw, TrainableCodec

    main, low, tiered = tiers
    cdm = copy_of_control(tiered)
    with pytest.raises(ValueError, match="freeze_compressor"):
        TrainableCodec(tiered.config, tiered.backbone, tiered.compressor, cdm, 1, LossConfig(), 1.0)
    model = TrainableCodec(tiered.config, tiered.backbone, tiered.compressor, cdm, 1, LossConfig(), 1.0,
                           freeze_compressor=True)
    scale = (tiered.config.rate_point.variable.anchors - 1) / RATE_LEVELS
    levels = [0, 3, 4, RATE_LEVELS]
    positions = torch.tensor([level * scale for level in levels])
    routes = [tiered.config.rate_point.route(level) for level in levels]
    assert model.routes(positions) == routes and [r.tier for r in routes] == ["low", "low", "main", "main"]
    assert model.residual_steps(positions) == [r.residual_steps for r in routes] == [90, 85, 54, 20]

    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(4, 4, 16, 16, generator=g)
    with torch.no_grad():
        z_c, bits = model.compress_latents(z0, positions)
        for i, route in enumerate(routes):  # each row is its own tier's z_c at its own position
            own = tiered.compressor.tier(route)(z0[i : i + 1], torch.tensor([route.position]))["z_c"]
            assert torch.allclose(z_c[i : i + 1], own, atol=1e-5), levels[i]  # batched convolutions: last-bit float differences
    assert bits.shape == (4,) and bool((bits > 0).all())
    noise = torch.randn(4, 4, 16, 16, generator=g)
    n = torch.tensor([80, 60, 50, 10])
    terms = model(torch.rand(4, 3, 128, 128), [""] * 4, z0, LossDraw(n, noise, positions=positions))
    with torch.no_grad():
        z_n = torch.cat([model.schedule_for(r.residual_steps).q_sample(z0[i : i + 1], z_c[i : i + 1], noise[i : i + 1],
                                                                       n[i : i + 1]) for i, r in enumerate(routes)])
        eps = cdm(z_n, n, encoder_hidden_states=tiered.backbone.encode_text([""] * 4), controlnet_cond=z_c).sample
    assert float(terms["loss_eps"].detach()) == pytest.approx(float(F.mse_loss(eps, noise)), rel=1e-5)
    terms["total"].backward()
    assert all(p.grad is None for p in tiered.compressor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cdm.parameters())
    snapshot = snapshot_codec(model, "cpu")
    assert snapshot.fingerprint == tiered.fingerprint  # nothing has stepped yet: the same codec


def copy_of_control(codec):
    """A control module with the codec's weights, so that training it leaves the fixture alone."""
    from resulic.models.control import build_control_unet, control_state_dict, load_control_state

    cdm = build_control_unet(codec.backbone.unet, codec.config.control)
    load_control_state(cdm, control_state_dict(codec.cdm))
    return cdm


def trained_looking_control(codec, seed: int = 9):
    """The codec's control module with its links set off zero, as training would leave them: its
    decode then differs from the prior's (a zero-link module equals the prior alone)."""
    import torch

    from resulic.models.control import LINK_MARKERS

    cdm = copy_of_control(codec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in cdm.named_parameters():
            if param.requires_grad and any(m in name for m in LINK_MARKERS):
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    return cdm


def test_a_low_tier_without_control_decodes_with_the_prior_alone_and_trains_nothing_there(tiers, small_photo):
    """low_tier.control 'none': its levels decode as the prior alone would (the control module's
    links off) even when the shared control module has trained, while the main tier's levels go
    through it; in training, those rows predict the noise without control too."""
    import torch

    from resulic.codec import Codec
    from resulic.codec.tiers import assemble
    from resulic.train.config import LossConfig
    from resulic.train.model import TrainableCodec

    main, low, _ = tiers
    trained = Codec(main.config, main.backbone, main.compressor, trained_looking_control(main), main.device)
    shared = assemble(trained, low, levels=4, own_levels=(0, 30), main_from=20)
    alone = assemble(trained, low, levels=4, own_levels=(0, 30), main_from=20, low_control="none")
    assert alone.fingerprint != shared.fingerprint
    assert [alone.applies_control(level) for level in (0, 3, 4, 64)] == [False, False, True, True]
    assert all(shared.applies_control(level) for level in (0, 3, 4, 64))
    data = alone.encode(small_photo, level=2).data
    prior_only = low.decode(low.encode(small_photo, level=20).data).image  # low's own control never trained
    assert alone.decode(data).image.tobytes() == prior_only.tobytes()
    assert shared.decode(shared.encode(small_photo, level=2).data).image.tobytes() != prior_only.tobytes()
    through_control = shared.decode(shared.encode(small_photo, level=4).data).image
    assert alone.decode(alone.encode(small_photo, level=4).data).image.tobytes() == through_control.tobytes()

    model = TrainableCodec(alone.config, alone.backbone, alone.compressor, alone.cdm, 1, LossConfig(), 1.0,
                           freeze_compressor=True)
    scale = (alone.config.rate_point.variable.anchors - 1) / 127
    positions = torch.tensor([2 * scale, 100 * scale])  # levels 2 (low tier) and 100 (main)
    g = torch.Generator().manual_seed(6)
    z_n, z_c = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    n, context = torch.tensor([30, 10]), alone.backbone.encode_text(["", ""])
    with torch.no_grad():
        eps = model.predict_noise(z_n, n, context, z_c, positions)
        with_control = alone.cdm(z_n, n, encoder_hidden_states=context, controlnet_cond=z_c).sample
        without = alone.cdm(z_n, n, encoder_hidden_states=context, controlnet_cond=z_c, apply_control=False).sample
    torch.testing.assert_close(eps[0], without[0])
    torch.testing.assert_close(eps[1], with_control[1])
    assert not torch.allclose(with_control[0], without[0])  # the rows differ: the test can fail


def test_the_release_command_assembles_a_folder_and_refuses_a_fixed_rate_model(tiers, codec, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from resulic.codec.store import load_codec, save_codec

    spec = importlib.util.spec_from_file_location("release_small", Path(__file__).parents[1] / "jobs" / "release_small.py")
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    main, low, _ = tiers
    save_codec(main, tmp_path / "main")
    save_codec(low, tmp_path / "low")
    save_codec(codec, tmp_path / "fixed")
    args = ["tiered", "--main", str(tmp_path / "main"), "--low", str(tmp_path / "low"), "--levels", "4",
            "--low-levels", "0", "30", "--main-from", "20", "--low-residual-steps", "80", "60", "-o"]
    assert release.main([*args, str(tmp_path / "tiered")]) == 0
    tiered = load_codec(tmp_path / "tiered")
    assert tiered.config.rate_point.low_tier.variable.residual_steps == [80, 60]
    assert tiered.config.rate_point.route(0).residual_steps == 80
    capsys.readouterr()
    assert release.main([*args[:2], str(tmp_path / "fixed"), *args[3:], str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: main: a single variable-rate model is needed") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    # 'steps': the same tiered model with other N_r at its main anchors — same bits, new fingerprint
    assert release.main(["steps", "--model", str(tmp_path / "tiered"), "--residual-steps", "50", "30", "10",
                         "-o", str(tmp_path / "steps")]) == 0
    retuned = load_codec(tmp_path / "steps")
    assert retuned.config.rate_point.variable.residual_steps == [50, 30, 10] and retuned.fingerprint != tiered.fingerprint
    assert retuned.config.rate_point.route(RATE_LEVELS).residual_steps == 10
    assert retuned.config.rate_point.route(0).residual_steps == 80  # the low tier keeps its own
    assert [str(p.relative_to(tmp_path / "steps")) for p in sorted((tmp_path / "steps").iterdir())] == \
        [str(p.relative_to(tmp_path / "tiered")) for p in sorted((tmp_path / "tiered").iterdir())]
    capsys.readouterr()
    assert release.main(["steps", "--model", str(tmp_path / "tiered"), "--residual-steps", "50", "30",
                         "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --residual-steps:") and err.count("\n") == 1 and not (tmp_path / "bad").exists()


def test_a_tiered_model_splits_into_its_two_models_whole_again(tiers, codec, small_photo, tmp_path):
    """``split`` (``jobs/release_small.py split``): each tier back as the model it was assembled
    from — its own levels, bits and fingerprint — to train on and assemble anew."""
    import importlib.util
    from pathlib import Path

    from resulic.codec.store import load_codec, save_codec
    from resulic.codec.tiers import split
    from resulic.errors import ModelLoadError

    main, low, tiered = tiers
    main_again, low_again = split(tiered)
    assert main_again.fingerprint == main.fingerprint and low_again.config.compressor == low.config.compressor
    assert low_again.config.rate_point.variable == low.config.rate_point.variable
    for own, again in ((main, main_again), (low, low_again)):
        for level in (0, 77, RATE_LEVELS):
            assert unpack(again.encode(small_photo, level=level).data).latent == \
                unpack(own.encode(small_photo, level=level).data).latent, level
    with pytest.raises(ModelLoadError, match="one compressor"):
        split(main)
    spec = importlib.util.spec_from_file_location("release_small", Path(__file__).parents[1] / "jobs" / "release_small.py")
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    save_codec(tiered, tmp_path / "tiered")
    assert release.main(["split", "--model", str(tmp_path / "tiered"), "--main-out", str(tmp_path / "m")]) == 0
    assert load_codec(tmp_path / "m").fingerprint == main.fingerprint and not (tmp_path / "l").exists()


def test_a_tiered_model_ships_in_float16_and_decodes_its_files_by_fingerprint(tiers, small_photo, tmp_path):
    """jobs/release_small.py codecs: both tiers' weights rounded to float16, re-fingerprinted;
    the shipped folder loads as one tiered model and decodes the files it writes."""
    from resulic.codec import shipped
    from resulic.codec.store import save_codec

    _, _, tiered = tiers
    save_codec(tiered, tmp_path / "tiered")
    data = shipped.release([("variable", tmp_path / "tiered")], "variable", {}, out=tmp_path / "shipped")
    point = data["points"][0]
    assert point["low_tier"]["levels"] == 4 and point["fingerprint"] != tiered.fingerprint.hex()
    released = shipped.load("variable", folder=tmp_path / "shipped")
    assert released.fingerprint.hex() == point["fingerprint"]
    for level in (1, 90):
        file = released.encode(small_photo, level=level).data
        again = shipped.load_for_file(file, folder=tmp_path / "shipped")
        assert again.decode(file).image.size == small_photo.size


def test_with_the_low_models_control_module_its_tier_decodes_exactly_as_it_did(tiers, small_photo):
    """--control low: a shipped model whose control module never trained can become the low tier
    and keep every picture it made (here the low model's control is made different from the main
    one's, so the test can tell which one decoded)."""
    import copy

    import torch

    from resulic.codec import Codec
    from resulic.codec.tiers import assemble

    main, low, _ = tiers
    cdm = copy.deepcopy(low.cdm)
    with torch.no_grad():
        for name, param in cdm.named_parameters():
            if param.requires_grad:  # the control module's own weights, not the frozen prior's
                param.add_(0.05)
    low = Codec(low.config, low.backbone, low.compressor, cdm)
    tiered = assemble(main, low, levels=4, own_levels=(0, 30), main_from=20, control="low")
    assert tiered.fingerprint != assemble(main, low, levels=4, own_levels=(0, 30), main_from=20).fingerprint
    ours = tiered.decode(tiered.encode(small_photo, level=3).data).image
    theirs = low.decode(low.encode(small_photo, level=30).data).image
    assert ours.tobytes() == theirs.tobytes()
    with pytest.raises(Exception, match="control: 'main' or 'low'"):
        assemble(main, low, levels=4, own_levels=(0, 30), main_from=20, control="both")
