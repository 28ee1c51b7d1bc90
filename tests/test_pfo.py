"""Pfo on the tiny profile, and the codec's text modes end to end."""

import warnings

import pytest
import torch

from resulic.codec.container import unpack
from resulic.config import PfoConfig, SemanticsConfig
from resulic.images import image_to_tensor, pad_to_multiple
from resulic.semantics.pfo import optimize_prompt, prompt_loss
from resulic.semantics.pipeline import Semantics
from resulic.semantics.prompt import text_token_ids

CAPTION = "a woman in a white space suit"


@pytest.fixture(scope="module")
def latents(codec, photo):
    with torch.no_grad():
        z0 = codec.backbone.encode(pad_to_multiple(image_to_tensor(photo), codec.config.stride))
        return z0, codec.compressor.compress(z0).z_c


def test_pfo_runs_a_few_iterations_and_returns_decodable_tokens(codec, photo, latents):
    ids = text_token_ids(codec.backbone.tokenizer, CAPTION)
    run = optimize_prompt(codec, photo, latents[1], ids, PfoConfig(iterations=4, eval_every=2, progress=False))
    assert run.iterations == 4 and run.stopped_by == "iterations" and len(run.losses) == 4
    assert [it for it, _ in run.scores] == [2, 4, 4]
    assert len(run.tokens) == len(ids) and run.best_score >= run.initial_score  # PSNR: higher is better
    assert all(0 <= t < 512 for t in run.tokens)  # the tiny vocabulary without its special tokens


def test_a_zero_time_budget_stops_after_the_first_iteration(codec, photo, latents):
    ids = text_token_ids(codec.backbone.tokenizer, CAPTION)
    run = optimize_prompt(codec, photo, latents[1], ids, PfoConfig(iterations=50, time_budget_s=0, progress=False))
    assert run.iterations == 1 and run.stopped_by == "time budget"


def test_the_optimised_loss_goes_down_on_a_fixed_example(codec, photo, latents):
    z0, z_c = latents
    ids = text_token_ids(codec.backbone.tokenizer, CAPTION)
    config = PfoConfig(iterations=10, eval_every=100, lr=0.1, noise_draws=1, progress=False)
    run = optimize_prompt(codec, photo, z_c, ids, config)
    assert run.losses[0] == pytest.approx(prompt_loss(codec, z0, z_c, ids, [_first_draw(codec, z0)]), rel=1e-4)
    assert min(run.losses[-4:]) < run.losses[0]


def _first_draw(codec, z0):
    """The first (n, eps) Pfo draws with the rate point's seed (same generator calls)."""
    codec.schedule.set_timesteps(codec.config.rate_point.sampling_steps)
    grid = codec.schedule.timesteps.tolist()
    g = torch.Generator("cpu").manual_seed(codec.config.rate_point.seed)
    n = grid[int(torch.randint(len(grid), (1,), generator=g))]
    return n, torch.randn(z0.shape, generator=g)


def test_empty_residual_skips_pfo(codec, photo, latents):
    run = optimize_prompt(codec, photo, latents[1], [], PfoConfig(iterations=5, progress=False))
    assert run.tokens == [] and run.iterations == 0


# -- the codec's text modes ------------------------------------------------------------------------
def test_residual_and_pfo_modes_decode_to_the_coded_tokens(codec, photo):
    semantics = Semantics(SemanticsConfig(pfo=PfoConfig(iterations=3, eval_every=1, progress=False)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no captioner: the reconstruction's caption is empty
        srr = codec.encode(photo, text=CAPTION, srr=True, semantics=semantics)
        pfo = codec.encode(photo, text=CAPTION, srr=True, pfo=True, semantics=semantics)
    assert unpack(srr.data).header.text_mode == 2 and unpack(pfo.data).header.text_mode == 3
    assert srr.semantics["residual"] == CAPTION and srr.semantics["reconstruction_caption"] == ""
    assert pfo.semantics["pfo"]["iterations"] == 3
    for r in (srr, pfo):
        d = codec.decode(r.data)
        assert d.text_tokens == r.text_tokens and d.text == r.semantics["text"]
        assert len(r.data) - r.latent_bytes == 10 + 1 + r.text_bytes + 2  # header (200x150), length varint, text, CRC


def test_caption_mode_uses_the_caption_source(codec, photo, tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image": "astronaut.png", "caption": "an astronaut with a flag"}\n')
    semantics = Semantics(SemanticsConfig(captions_file=str(path)))
    r = codec.encode(photo, caption=True, image_name="astronaut.png", semantics=semantics)
    assert unpack(r.data).header.text_mode == 1
    assert codec.decode(r.data).text == "an astronaut with a flag"


def test_pfo_needs_srr(codec, photo):
    with pytest.raises(ValueError, match="srr"):
        codec.encode(photo, text=CAPTION, pfo=True)


def test_the_clip_term_runs_with_a_local_clip_model(codec, photo, latents, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from resulic.models.backbone import TINY_TEXT

    text = {k: TINY_TEXT[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                       "num_attention_heads", "max_position_embeddings", "bos_token_id", "eos_token_id")}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "clip")
    ids = text_token_ids(codec.backbone.tokenizer, CAPTION)
    base = PfoConfig(iterations=2, eval_every=100, noise_draws=1, progress=False)
    with_clip = base.model_copy(update={"clip_model": str(tmp_path / "clip"), "clip_weight": 1.0})
    plain = optimize_prompt(codec, photo, latents[1], ids, base)
    clipped = optimize_prompt(codec, photo, latents[1], ids, with_clip)
    assert clipped.losses[0] > plain.losses[0]  # 1 - cos adds a positive term at the same tokens
    assert clipped.losses[0] - plain.losses[0] <= 2.0


def test_a_clip_model_of_another_width_is_refused(codec, photo, latents, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from resulic.errors import ModelLoadError

    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=514, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16),
        projection_dim=8,
    )).save_pretrained(tmp_path / "clip16")
    config = PfoConfig(iterations=1, clip_model=str(tmp_path / "clip16"), progress=False)
    with pytest.raises(ModelLoadError, match="wide"):
        optimize_prompt(codec, photo, latents[1], text_token_ids(codec.backbone.tokenizer, CAPTION), config)
