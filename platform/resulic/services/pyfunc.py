"""MLflow's ``pyfunc`` flavour for registered codecs: ``mlflow.pyfunc.load_model("models:/resulic@champion")``
compresses image bytes to file bytes and decompresses file bytes to PNG bytes, and ``mlflow
models serve -m models:/resulic@champion --env-manager local`` serves the same over REST.

A registered version is a trained-codec folder (``resulic.services.registry``). Registration writes an
``MLmodel`` file into that folder that names this module as the flavour's loader
(``loader_module: resulic.services.pyfunc``, ``data: .``: the folder itself) and carries the signature:

- input: one column ``data`` of type binary: the images' bytes (PNG, JPEG, …), or with the
  parameter ``mode: decompress`` the files' bytes;
- output: one column ``data`` of type binary: the ``.rslc`` files' bytes, or the PNGs;
- parameter ``mode``: ``compress`` (default) or ``decompress``.

A custom flavour loader rather than a logged ``mlflow.pyfunc.PythonModel``: no pickle is written.
Loading a version imports this module from the installed ``resulic`` and reads the weights as
safetensors, so fetching and loading a version still runs no code from the store (a
``PythonModel`` logged with ``python_model=`` is a cloudpickle, which does).
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


class CodecModel:
    """The codec behind the pyfunc interface: image bytes <-> file bytes (see the module's doc).
    What ``_load_pyfunc`` returns; pyfunc calls ``predict(model_input, params)``."""

    def __init__(self, codec):
        self.codec = codec

    def predict(self, model_input, params=None):
        import pandas as pd

        from ..errors import ResulicError
        from ..images import open_image, png_bytes

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


def _load_pyfunc(data_path: str):
    """The flavour's loader (``loader_module``): ``data_path`` is the trained-codec folder."""
    from ..codec.store import load_codec

    return CodecModel(load_codec(data_path))
