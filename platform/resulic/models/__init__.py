"""Neural parts of the codec: the frozen backbone, the latent compressor, the control module."""

import os as _os

import torch as _torch


def use_backward_safe_kernels() -> None:
    """Switch this process to PyTorch's native CPU convolutions before any backward pass.

    oneDNN's CPU convolution kernels corrupt the heap ("free(): invalid next size", then SIGABRT)
    in the backward pass of the tiny profile's control module on AMD EPYC CPUs with torch 2.14.1
    (tests/test_train_model.py reproduced it within two steps). The native kernels compute the
    same convolutions correctly but 6-7x slower on this CPU (a 384x256 decode: 35 s against
    5.3 s, docs/benchmarks.md), so only processes that backpropagate switch: training
    (``TrainableCodec``, ``TrainablePrior``) and Pfo. Encoding and decoding keep oneDNN.
    ``RESULIC_ONEDNN=1`` keeps oneDNN everywhere.
    """
    if _os.environ.get("RESULIC_ONEDNN") != "1":
        _torch.backends.mkldnn.enabled = False
