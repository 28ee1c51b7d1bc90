"""The exceptions a user of the codec can see.

Everything the library raises on bad input derives from :class:`ResulicError`, so that
entrypoints can turn it into a one-line message and a non-zero exit instead of a traceback.
"""


class ResulicError(Exception):
    """Base class of every error meant for the user."""


class ConfigError(ResulicError):
    """A configuration file or override is malformed; the message names the key and file."""


class ModelLoadError(ResulicError):
    """A model (backbone or trained-codec folder) is missing or unreadable."""


class BitstreamError(ResulicError):
    """A compressed file is truncated, corrupt or not a ResULIC file."""


class ModelMismatchError(BitstreamError):
    """A compressed file was made by a different model than the one decoding it."""


class ImageError(ResulicError):
    """An input image is unreadable, empty or too large."""
