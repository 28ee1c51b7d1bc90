"""Neural parts of the codec: the frozen backbone, the latent compressor, the control module."""

import os as _os

import torch as _torch

# oneDNN's CPU convolution kernels corrupt the heap ("free(): invalid next size", then SIGABRT)
# in the backward pass of the tiny profile's control module on AMD EPYC CPUs with torch 2.14.1
# (tests/test_train_model.py reproduces it within two steps). PyTorch's native kernels compute
# the same convolutions correctly, so every process that builds a model uses them unless
# RESULIC_ONEDNN=1 opts back in. They cost 2.3-2.4x in encode/decode time on this CPU
# (benchmarks/bench_kernels.py, docs/benchmarks.md "CPU convolutions").
if _os.environ.get("RESULIC_ONEDNN") != "1":
    _torch.backends.mkldnn.enabled = False
