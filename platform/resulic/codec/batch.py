"""Decoding several files of one model in one batch (the Serve replica's ``@serve.batch`` path).

Files that share size and decoder settings (S, guidance, seed) run the residual DDIM sampler and
the VAE as one batch: every file's z_c, its own prompt, the seed's noise (the same draw a single
decode makes). Whether a batch gives exactly the pixels of single decodes depends on the device's
kernels; tests/test_codec_batch.py checks it on CPU. Anything else (a group of one, eta > 0,
whose per-step noise depends on the batch shape) decodes one by one through ``Codec.decode``.
"""

from __future__ import annotations

import time

import torch

from ..config import NEGATIVE_PROMPT
from ..diffusion import residual_ddim_sample
from ..errors import ResulicError
from ..images import tensor_to_image
from ..semantics.prompt import ids_to_text, prompt_input_ids
from .codec import Codec, DecodeResult, guided_denoiser
from .limits import DecodeLimits


def _prepare(codec: Codec, data: bytes, limits: DecodeLimits | None):
    """(group key, z_c, ids, header) of one file, or the error a single decode would raise."""
    container, steps, guidance, seed, level = codec.check_file(data, limits)
    ids = codec.decode_text(container, limits)
    z_c = codec.decode_latent(container)
    header = container.header
    # The level sets a variable-rate model's N_r: files of one batch share their schedule.
    return (header.width, header.height, steps, guidance, seed, level), z_c, ids, header


@torch.no_grad()
def decode_batch(codec: Codec, files: list[bytes], limits: DecodeLimits | None = None) -> list[DecodeResult | ResulicError]:
    """Each file's DecodeResult, or the ResulicError its single decode would raise, in order
    (``limits`` as in ``Codec.decode``)."""
    results: list = [None] * len(files)
    groups: dict[tuple, list[int]] = {}
    prepared = {}
    for i, data in enumerate(files):
        try:
            if codec.schedule.config.eta > 0:
                raise LookupError  # per-step noise depends on the batch: decode alone
            key, z_c, ids, header = _prepare(codec, data, limits)
        except ResulicError as exc:
            results[i] = exc
            continue
        except LookupError:
            results[i] = _single(codec, data, limits)
            continue
        prepared[i] = (z_c, ids, header)
        groups.setdefault(key, []).append(i)
    for (width, height, steps, guidance, seed, level), members in groups.items():
        if len(members) == 1:
            results[members[0]] = _single(codec, files[members[0]], limits)
            continue
        t0 = time.perf_counter()
        z_c = torch.cat([prepared[i][0] for i in members])
        id_lists = [prepared[i][1] for i in members]
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(prepared[members[0]][0].shape, generator=generator, dtype=z_c.dtype)
        noise = noise.repeat(len(members), 1, 1, 1).to(codec.device)
        denoise = _batched_denoiser(codec, z_c, id_lists, guidance, codec.applies_control(level))
        z = residual_ddim_sample(codec.schedule_for(level), denoise, z_c, noise, steps, generator=generator)
        x = codec.backbone.decode(z)[..., :height, :width]
        seconds = (time.perf_counter() - t0) / len(members)
        for row, i in enumerate(members):
            results[i] = DecodeResult(tensor_to_image(x[row : row + 1]), prepared[i][2],
                                      ids_to_text(codec.backbone.tokenizer, id_lists[row]), 0, seconds, {}, id_lists[row])
    return results


def _single(codec: Codec, data: bytes, limits: DecodeLimits | None) -> DecodeResult | ResulicError:
    try:
        return codec.decode(data, limits=limits)
    except ResulicError as exc:
        return exc


def _batched_denoiser(codec: Codec, z_c: torch.Tensor, id_lists: list[list[int]], guidance: float,
                      apply_control: bool = True):
    """``Codec._denoiser`` for a batch: each file's own prompt, both CFG branches in one call."""
    tokenizer = codec.backbone.tokenizer
    positive = torch.cat([codec.backbone.encode_ids(prompt_input_ids(tokenizer, ids)) for ids in id_lists])
    negative = None if guidance == 1 else codec.backbone.encode_text([NEGATIVE_PROMPT]).repeat(z_c.shape[0], 1, 1)
    return guided_denoiser(codec.cdm, z_c, positive, negative, guidance, apply_control)
