"""Neural parts of the codec (the method): frozen backbone, latent compressor, control module; imports the ground and entropy/."""

from .kernels import configure as _configure_kernels

# oneDNN on (RESULIC_ONEDNN=0 turns it off in the whole process); the compressor always runs on
# the native kernels, and the layers oneDNN's 1x1 backward-weights bug hits are kept off it:
# resulic/models/kernels.py says why.
_configure_kernels()
