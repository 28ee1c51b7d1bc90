"""The ControlNet-XS control module fed by z_c (RESULIC.md §3.5)."""

import torch

from resulic.config import ControlConfig
from resulic.models.control import LINK_MARKERS, _base_name, _tile_crop, control_state_dict, load_control_state


def test_at_initialisation_the_output_equals_the_unets(codec):
    torch.manual_seed(0)
    x, z_c, ctx = torch.randn(1, 4, 16, 24), torch.randn(1, 4, 16, 24), torch.randn(1, 77, 32)
    t = torch.tensor([120])
    with torch.no_grad():
        base = codec.backbone.unet(x, t, encoder_hidden_states=ctx).sample
        controlled = codec.cdm(x, t, encoder_hidden_states=ctx, controlnet_cond=z_c).sample
        no_control = codec.cdm(x, t, encoder_hidden_states=ctx, controlnet_cond=z_c, apply_control=False).sample
    torch.testing.assert_close(controlled, base, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(no_control, base, rtol=1e-3, atol=1e-3)


def test_links_start_at_zero_and_weights_come_from_the_unet(codec):
    state = control_state_dict(codec.cdm)
    links = [n for n in state if any(m in n for m in LINK_MARKERS)]
    assert links and all(torch.count_nonzero(state[n]) == 0 for n in links)
    params = dict(codec.cdm.named_parameters())
    name = "down_blocks.1.ctrl_resnets.0.conv1.weight"
    base = params[_base_name(name)]
    assert torch.equal(state[name], _tile_crop(base, state[name].shape))
    # the control module has its own time embedding, initialised from the UNet's
    assert "ctrl_time_embedding.linear_1.weight" in state


def test_only_control_parameters_are_trainable(codec):
    trainable = {n for n, p in codec.cdm.named_parameters() if p.requires_grad}
    assert trainable == set(control_state_dict(codec.cdm))
    assert not any(n.startswith("base_") or ".base_" in n for n in trainable if "base_to_ctrl" not in n)


def test_control_state_round_trip(codec):
    state = {k: v.clone() + 1 for k, v in control_state_dict(codec.cdm).items()}
    from resulic.models.control import build_control_unet

    fresh = build_control_unet(codec.backbone.unet, ControlConfig())
    load_control_state(fresh, state)
    assert all(torch.equal(control_state_dict(fresh)[k], v) for k, v in state.items())


def test_tile_crop():
    src = torch.arange(6.0).reshape(2, 3)
    assert _tile_crop(src, torch.Size([3, 2])).tolist() == [[0, 1], [3, 4], [0, 1]]


def test_the_joined_model_holds_the_unets_own_tensors(codec):
    """Every frozen base parameter of ControlNet-XS's joined model is the backbone UNet's tensor,
    not a copy (one prior in memory however many codecs share a backbone), the control module's
    weights are its own, and two codecs built on one UNet share it."""
    from resulic.models.control import build_control_unet

    unet = {id(p) for p in codec.backbone.unet.parameters()}
    frozen = [p for p in codec.cdm.parameters() if not p.requires_grad]
    assert len(frozen) == len(unet) and all(id(p) in unet for p in frozen)
    assert not any(id(p) in unet for p in codec.cdm.parameters() if p.requires_grad)
    other = build_control_unet(codec.backbone.unet, ControlConfig())
    assert {id(p) for p in other.parameters() if not p.requires_grad} == unet


def test_a_prior_being_trained_is_not_tied_into_the_joined_model(codec):
    """Sharing is for frozen UNets: a trainable one keeps its own tensors, and the control module's
    trainable set stays exactly its own weights."""
    from resulic.models.control import build_control_unet

    unet = codec.backbone.unet
    unet.requires_grad_(True)
    try:
        joined = build_control_unet(unet, ControlConfig())
    finally:
        unet.requires_grad_(False)
    ids = {id(p) for p in unet.parameters()}
    assert not any(id(p) in ids for p in joined.parameters())
    assert set(control_state_dict(joined)) == set(control_state_dict(codec.cdm))
