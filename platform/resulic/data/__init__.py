"""Training data (the platform): photos and manifests -> records -> Ray Data crops; imports only the ground (errors, images)."""
