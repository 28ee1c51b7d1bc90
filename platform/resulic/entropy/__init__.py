"""Entropy coding (the method): rANS streams of the latent symbols; imports only the ground (errors)."""
