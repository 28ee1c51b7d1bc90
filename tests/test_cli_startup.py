"""Commands that need no model import no heavy library (their start-up time: benchmarks/bench_cli_startup.py).

Each case runs ``resulic.cli.commands.main`` in a fresh interpreter and reports which heavy modules ended
up in ``sys.modules``: importing torch + diffusers costs seconds, so ``--help``, ``info`` and
argument or missing-file errors must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from resulic.codec.container import Container, Header, pack

HEAVY = ("torch", "diffusers", "transformers", "ray", "mlflow", "compressai", "matplotlib")

PROBE = """\
import contextlib, io, json, sys
from resulic.cli.commands import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "heavy": heavy}}))
""".format(heavy=HEAVY)


def run_fresh(*argv: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the resulic this test imports
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def rslc(tmp_path):
    path = tmp_path / "photo.rslc"
    path.write_bytes(pack(Container(Header(b"\x01\x02\x03\x04", 768, 512), b"", b"\x55" * 40)))
    return path


def test_help_imports_nothing_heavy():
    r = run_fresh("--help")
    assert r["code"] == 0 and "resulic compress" in r["stdout"]
    assert r["heavy"] == []


def test_info_reads_the_header_without_torch(rslc):
    r = run_fresh("info", str(rslc))
    assert r["code"] == 0
    assert json.loads(r["stdout"])["width"] == 768
    assert r["heavy"] == []


@pytest.mark.parametrize("argv, message", [
    (["compress", "{tmp}/missing.png"], "no such file or folder"),
    (["decompress", "{tmp}/missing.rslc"], "no such file or folder"),
    (["info", "{tmp}/missing.rslc"], "no such file or folder"),
    (["compress"], "the following arguments are required: input"),
    (["bd-rate", "--help"], "BD-rate"),
])
def test_errors_and_help_need_no_heavy_library(tmp_path, argv, message):
    r = run_fresh(*(a.format(tmp=tmp_path) for a in argv))
    assert message in r["stdout"] + r["stderr"]
    assert r["heavy"] == []


LEVELS = """\
import contextlib, io, json, logging, os, sys
from resulic.cli.commands import main
from resulic.services.runtime import library_log_level
with contextlib.redirect_stdout(io.StringIO()):
    main(sys.argv[1:])
import mlflow  # configures its own loggers when imported
from ray import serve  # sets its own logger to INFO when imported; serve.local quiets it again
from resulic.services.cluster import PREEMPTION_WATCHER_ENV, local_worker_env
from resulic.services.runtime import quiet_libraries
from serve.local import serve_logging
quiet_libraries()
import warnings
from ray.util.annotations import RayDeprecationWarning  # Ray installs its own filter for it unless told otherwise
with warnings.catch_warnings(record=True) as shown:
    warnings.warn("torch.jit.script is deprecated", FutureWarning)
    warnings.warn("RunConfig is deprecated", RayDeprecationWarning)
print(json.dumps({"warnings": len(shown), "worker_warning_filters": local_worker_env().get("PYTHONWARNINGS"),
                  "mlflow": logging.getLogger("mlflow").level, "alembic": logging.getLogger("alembic").level,
                  "ray_init": library_log_level(), "workers": os.environ.get("RESULIC_VERBOSE"),
                  "serve": logging.getLogger("ray.serve").level, "serve_app": serve_logging(),
                  "preemption_watcher": local_worker_env().get(PREEMPTION_WATCHER_ENV)}))
"""


def test_ray_workers_filter_the_libraries_warnings_from_their_start(ray_cluster):
    """A local Ray's workers start with the driver's warning filters (PYTHONWARNINGS in their
    runtime env): a deprecation notice raised while a worker imports its libraries is not shown."""

    @ray_cluster.remote
    def warn_in_a_worker():
        import sys
        import warnings

        from ray.util.annotations import RayDeprecationWarning

        with warnings.catch_warnings(record=True) as shown:
            warnings.warn("torch.jit.script is deprecated", FutureWarning)
            warnings.warn("RunConfig is deprecated", RayDeprecationWarning)
        return list(sys.warnoptions), len(shown)

    options, shown = ray_cluster.get(warn_in_a_worker.remote(), timeout=120)
    assert options == ["ignore::FutureWarning", "ignore::DeprecationWarning"] and shown == 0


@pytest.mark.parametrize("verbose", [False, True])
def test_library_logs_are_warnings_only_unless_verbose(rslc, verbose):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for name in ("RESULIC_VERBOSE", "MLFLOW_LOGGING_LEVEL", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "PYTHONWARNINGS"):
        env.pop(name, None)
    argv = (["--verbose"] if verbose else []) + ["info", str(rslc)]
    done = subprocess.run([sys.executable, "-c", LEVELS, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    levels = json.loads(done.stdout.splitlines()[-1])
    if verbose:  # the libraries' own defaults, for this process and (via the variable) Ray's workers
        assert levels == {"warnings": 2, "worker_warning_filters": None, "mlflow": 20, "alembic": 30, "ray_init": 20, "workers": "1",  # alembic: MLflow's own WARNING
                          "serve": 20, "serve_app": {"log_level": "INFO", "enable_access_log": True},
                          "preemption_watcher": None}
    else:  # Serve: warnings only, no line per request; Ray Train: no preemption watcher on one machine
        assert levels == {"warnings": 0, "worker_warning_filters": "ignore::FutureWarning,ignore::DeprecationWarning",
                          "mlflow": 30, "alembic": 30, "ray_init": 30, "workers": None,
                          "serve": 30, "serve_app": {"log_level": "WARNING", "enable_access_log": False},
                          "preemption_watcher": "0"}


def test_the_ingress_checks_a_header_without_torch(rslc):
    """Serve's ingress refuses a bad file from its header alone; importing the codec's limits once
    pulled torch, transformers and diffusers in with the text coder's token count (+840 MB of
    ingress memory after the first bad file: benchmarks/attack_http.py)."""
    probe = (
        "import dataclasses, json, sys\n"
        "from resulic.serving.limits import ServeLimits, bitstream_header, check_header_settings, RequestError\n"
        f"header = bitstream_header(open({str(rslc)!r}, 'rb').read(), ServeLimits())\n"
        "settings = {'rate_point': {'residual_steps': 5, 'sampling_steps': 3}, 'stride': 128}\n"
        "check_header_settings(header, settings, ServeLimits())\n"
        "try:\n"
        "    check_header_settings(dataclasses.replace(header, steps=9), settings, ServeLimits())\n"
        "    refused = None\n"
        "except RequestError as exc:\n"
        "    refused = str(exc)\n"
        f"print(json.dumps({{'refused': refused, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.splitlines()[-1])
    assert r["refused"] == "steps = 9 exceeds this model's N_r = 5"
    assert r["heavy"] == []


# What CompressAI's package __init__ would pull in beside the parts the codec uses
# (entropy/compressai_parts.py): +318 MB resident and seconds of start-up.
UNUSED_BY_THE_CODEC = ("torch_geometric", "pandas")


# What only a decoder needs: the prior (diffusers' UNet, which imports torch._dynamo) and the
# text encoder (transformers' CLIP model): seconds and ~300 MB an encoder does without.
DECODER_ONLY = ("diffusers", "transformers.models.clip.modeling_clip")


def test_compress_imports_only_the_compressai_parts_it_uses(tmp_path, photo):
    """`resulic compress` of a real photo with the shipped model, in a fresh interpreter: the file
    is written, and neither torch_geometric nor pandas was imported on the way — nor diffusers and
    the CLIP model, which only a decoder needs; the file is the one the whole codec writes."""
    from resulic.codec import shipped

    src = tmp_path / "photo.png"
    photo.crop((0, 0, 64, 64)).save(src)
    unused = UNUSED_BY_THE_CODEC + ("compressai.zoo",) + DECODER_ONLY
    probe = PROBE.replace(f"for m in {HEAVY!r}", f"for m in {unused!r}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("RESULIC_MODEL", None)  # the suite's default is the tiny profile; a user's is the shipped codec
    done = subprocess.run([sys.executable, "-c", probe, "compress", str(src), "-o", str(tmp_path / "out.rslc")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.splitlines()[-1])
    assert r["code"] == 0, r
    assert r["heavy"] == []
    whole = shipped.load()
    data = (tmp_path / "out.rslc").read_bytes()
    assert data == whole.compress(Image.open(src).convert("RGB"))
    assert whole.decode(data).image.size == (64, 64)


def test_the_rest_of_compressai_still_imports_after_the_codec_parts():
    """The package registered without its __init__ completes itself when asked for more."""
    probe = (
        "import json, sys\n"
        "import resulic.models.compressor\n"
        "light = 'torch_geometric' not in sys.modules\n"
        "import compressai, compressai.zoo\n"
        "from compressai.models import Cheng2020Anchor\n"
        "from compressai.registry import TRANSFORMS\n"
        "model = compressai.zoo.bmshj2018_factorized(1, pretrained=False)\n"
        "print(json.dumps({'light': light, 'coders': compressai.available_entropy_coders(),\n"
        "                  'model': type(model).__name__, 'transforms': len(TRANSFORMS) > 0}))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"light": True, "coders": ["ans"], "model": "FactorizedPrior",
                                                        "transforms": True}
