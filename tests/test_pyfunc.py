"""Registered versions are MLflow pyfunc models: ``mlflow.pyfunc.load_model("models:/…@champion")``
compresses image bytes to a real file's bytes and decompresses them to a PNG, with a signature."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from resulic.images import png_bytes


def test_pyfunc_load_model_round_trips_an_image(tmp_path, codec, photo, monkeypatch):
    import mlflow

    from resulic.services import registry
    from resulic.codec.container import unpack
    from resulic.codec.store import save_codec

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The environment only: mlflow.set_tracking_uri would outlive this test and point later
    # tests' clients at this store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    version = registry.register_codec(save_codec(codec, tmp_path / "folder"), "resulic-pyfunc")
    registry.set_alias("resulic-pyfunc", "champion", version)

    model = mlflow.pyfunc.load_model("models:/resulic-pyfunc@champion")
    assert model.metadata.get_input_schema().input_names() == ["data"]
    assert model.metadata.get_params_schema().params[0].name == "mode"
    files = model.predict(pd.DataFrame({"data": [png_bytes(photo)]}))
    data = files["data"][0]
    assert data == codec.compress(photo) and unpack(data).header.width == photo.width  # the CLI's bytes
    images = model.predict(pd.DataFrame({"data": [data]}), params={"mode": "decompress"})
    decoded = Image.open(io.BytesIO(images["data"][0]))
    assert decoded.format == "PNG" and decoded.size == photo.size
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(codec.decompress(data)))
    # the version still loads as a codec folder (the MLmodel file is one more file beside it)
    assert registry.open_codec("models:/resulic-pyfunc@champion").fingerprint == codec.fingerprint
    with pytest.raises(Exception, match="mode"):
        model.predict(pd.DataFrame({"data": [data]}), params={"mode": "sideways"})
