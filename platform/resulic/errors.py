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


class DecodeLimitError(BitstreamError):
    """A file asks for more work than the decoder's limits allow (size, steps, guidance, text).

    A ``BitstreamError`` because a caller that refuses bad files refuses these too.

    ``limit`` names the limit (a field of ``resulic.codec.limits.DecodeLimits``); the message ends
    with how to raise it, which each entrypoint words for its users (``with_hint``).
    """

    def __init__(self, message: str, limit: str, hint: str | None = None) -> None:
        self.message, self.limit = message, limit
        self.hint = hint or f"DecodeLimits({limit}=...)"
        super().__init__(f"{message}; raise the limit with {self.hint}")

    def with_hint(self, hint: str) -> "DecodeLimitError":
        return DecodeLimitError(self.message, self.limit, hint)
