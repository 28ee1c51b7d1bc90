"""The faces: the ``resulic`` command, the endpoint's Python client, job submission; may import every folder, and no folder imports it."""


def main(argv=None) -> int:
    """The ``resulic`` command (``commands.main``). Kept because ``resulic`` scripts installed
    before the cli/ folder existed call ``resulic.cli:main`` (pyproject.toml now names
    ``resulic.cli.commands:main``); importing it loads nothing until it is called."""
    from .commands import main as _main

    return _main(argv)
