"""Neural parts of the codec: the frozen backbone, the latent compressor, the control module."""
