"""Kept for registered versions made before the platform services moved to ``services/``: their
``MLmodel`` names ``loader_module: resulic.pyfunc``, which MLflow imports to load them. New
registrations name ``resulic.services.pyfunc``; this alias only forwards to it."""

from .services.pyfunc import CodecModel, _load_pyfunc, signature, write_mlmodel  # noqa: F401
