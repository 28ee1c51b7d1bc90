"""The main job's last step: serve the champion on 127.0.0.1 and round-trip the sample images
over HTTP, checking that the service writes the same bytes as the local round trip did."""

import io
import time
from pathlib import Path

from PIL import Image

from resulic.cli.client import CodecClient
from resulic.images import png_bytes, write_atomic
from resulic.evaluation.roundtrip import psnr


def _absolute_tracking_uri() -> str:
    """The driver's MLflow store, as replicas (other working folders) must name it."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def serve_and_roundtrip(model: str, items, output_dir: str | Path, local_dir: str | Path | None = None) -> str:
    """Serve ``model`` (a models:/ URI or a trained-codec folder) as rate point ``default``,
    compress and decompress ``items`` ((name, image) pairs) over HTTP into ``output_dir``, and
    return a table; ``local_dir`` holds the local round trip's .rslc files to compare with."""
    from . import local

    out = Path(output_dir)
    args = {"models": {"rate_points": {"default": str(model)}, "tracking_uri": _absolute_tracking_uri(),
                       "follow_aliases_s": None},
            "codec_options": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}}
    t0 = time.perf_counter()
    url = local.start(args)
    lines = [f"served {model} at {url} (ready in {time.perf_counter() - t0:.1f} s; docs at {url}/docs)",
             f"{'image':<14} {'bytes':>6} {'bpp':>8} {'version':>8} {'POST compress s':>16} "
             f"{'POST decompress s':>18} {'PSNR dB':>8}  same bytes as local"]
    try:
        client = CodecClient(url)
        for name, img in items:
            t1 = time.perf_counter()
            made = client.compress(png_bytes(img))
            t2 = time.perf_counter()
            back = client.decompress(made.data)
            t3 = time.perf_counter()
            write_atomic(out / f"{name}.rslc", made.data)
            write_atomic(out / f"{name}.png", back.data)
            local_file = Path(local_dir) / f"{name}.rslc" if local_dir else None
            same = "-" if not (local_file and local_file.is_file()) else str(local_file.read_bytes() == made.data).lower()
            decoded = Image.open(io.BytesIO(back.data)).convert("RGB")
            lines.append(f"{name:<14} {len(made.data):>6} {made.bpp:>8.4f} {made.model_version:>8} {t2 - t1:>16.2f} "
                         f"{t3 - t2:>18.2f} {psnr(img, decoded):>8.2f}  {same}")
    finally:
        local.stop()
    return "\n".join(lines)


def served_model(model: str | None, codec, output_dir: str | Path) -> str:
    """What to serve: the job's models:/ URI or folder, else ``codec`` saved as a folder (a
    model YAML or the untrained default has no folder to serve)."""
    from resulic.codec.store import save_codec
    from resulic.services.registry import is_registry_uri

    if model and (is_registry_uri(model) or Path(model).is_dir()):
        return model
    return str(save_codec(codec, Path(output_dir) / "served-model"))
