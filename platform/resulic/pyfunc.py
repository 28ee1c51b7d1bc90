"""MLflow's ``pyfunc`` flavour for registered codecs: ``mlflow.pyfunc.load_model("models:/resulic@champion")``
compresses image bytes to file bytes and decompresses file bytes to PNG bytes, and ``mlflow
models serve -m models:/resulic@champion --env-manager local`` serves the same over REST.

A registered version is a trained-codec folder (``resulic.registry``). Registration writes an
``MLmodel`` file into that folder that names this module as the flavour's loader
(``loader_module: resulic.pyfunc``, ``data: .``: the folder itself) and carries the signature:

- input: one column ``data`` of type binary: the images' bytes (PNG, JPEG, …), or with the
  parameter ``mode: decompress`` the files' bytes;
- output: one column ``data`` of type binary: the ``.rslc`` files' bytes, or the PNGs;
- parameter ``mode``: ``compress`` (default) or ``decompress``.

No pickle is written: loading a version imports this module from the installed ``resulic`` and
reads the weights as safetensors, so fetching and loading a version still runs no code from the
store (a ``PythonModel`` logged with ``python_model=`` would be a cloudpickle, which does).
``CodecModel`` is also a ``mlflow.pyfunc.PythonModel`` for those who log one themselves
(``artifacts={"codec": folder}``).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc

MLMODEL = "MLmodel"
MODES = ("compress", "decompress")


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, "data")]),
                          outputs=Schema([ColSpec(DataType.binary, "data")]),
                          params=ParamSchema([ParamSpec("mode", DataType.string, "compress")]))


def write_mlmodel(folder: str | Path) -> Path:
    """Make a trained-codec folder a pyfunc model too: its ``MLmodel`` file (nothing else changes)."""
    import sys

    from mlflow.models import Model

    folder = Path(folder)
    model = Model(signature=signature())
    mlflow.pyfunc.add_to_model(model, loader_module=__name__, data=".",
                               python_version=f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}")
    model.save(str(folder / MLMODEL))
    return folder / MLMODEL


import warnings  # noqa: E402

with warnings.catch_warnings():  # MLflow asks for type hints on predict: its schema is the signature above
    warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)

    class CodecModel(mlflow.pyfunc.PythonModel):
        """The codec behind the pyfunc interface: image bytes <-> file bytes (see the module's doc)."""

        def __init__(self, codec=None):
            self.codec = codec

        def load_context(self, context) -> None:
            from .codec.store import load_codec

            self.codec = load_codec(context.artifacts["codec"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            from .errors import ResulicError
            from .images import open_image, png_bytes

            mode = (params or {}).get("mode", "compress")
            if mode not in MODES:
                raise ResulicError(f"mode {mode!r}: one of {', '.join(MODES)}")
            column = model_input["data"] if isinstance(model_input, pd.DataFrame) else model_input
            out = []
            for value in list(column):
                data = bytes(value)
                if mode == "compress":
                    out.append(self.codec.compress(open_image(data)))
                else:
                    out.append(png_bytes(self.codec.decompress(data), mark=True))
            return pd.DataFrame({"data": out})


class _Loaded:
    """What ``_load_pyfunc`` returns: pyfunc calls ``predict(model_input, params)``."""

    def __init__(self, codec):
        self.model = CodecModel(codec)

    def predict(self, model_input, params=None):
        return self.model.predict(None, model_input, params)


def _load_pyfunc(data_path: str):
    """The flavour's loader (``loader_module``): ``data_path`` is the trained-codec folder."""
    from .codec.store import load_codec

    return _Loaded(load_codec(data_path))
