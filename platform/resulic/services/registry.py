"""The model-registry convention for trained codecs (MLflow), shared by evaluation, sweeps, Serve.

A registered codec is a trained-codec folder (``resulic.codec.store`` layout: config.yaml,
*.safetensors, manifest.json) logged as the artifacts ``codec/`` of an MLflow run, and a model
version whose ``source`` is that artifact folder and whose ``run_id`` is that run. A training run
already logs its codec there, so promotion registers the trial's own run (``register_run_codec``):
the version links to the run with its losses, parameters and grids. ``register_codec`` is for a
folder that no run logged (it logs one). MLflow's ``register_model`` insists on an MLflow
"logged model" (an MLmodel file); ``MlflowClient.create_model_version(name, source, run_id)``
registers any artifact folder, and ``models:/<name>@<alias>`` / ``models:/<name>/<version>``
then download it like any model. Registration adds an ``MLmodel`` file to the folder (the
``pyfunc`` flavour, resulic/services/pyfunc.py: image bytes <-> file bytes, loaded by the installed
``resulic``, no pickle), so ``mlflow.pyfunc.load_model`` works on a version too. Nothing in the
folder is executable, so fetching a version never runs code.

Version tags: ``fingerprint`` (the model's 4-byte id, as in every file it writes), ``rate_point``,
``backbone`` (profile), ``earlier_fingerprints`` (where it has them: its files made through an earlier
bundled prior, which it still decodes), plus the caller's. Promotion is an alias (``champion``), never a stage.

The tracking store: the caller's URI, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db`` (as in
``resulic.services.tracking``). Looking a URI up never creates a store: with no store there, it is an error
that says how to point at the right one (an empty new database could only answer "not found").
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from . import tracking
from ..errors import ModelLoadError

ARTIFACT_DIR = "codec"
EXPERIMENT = "resulic-registry"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def is_registry_uri(source: str | None) -> bool:
    return bool(source) and str(source).startswith("models:/")


def _client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    tracking.relocate_store(tracking.tracking_uri(tracking_uri))  # a moved clone's store: its artifact locations follow it
    return MlflowClient(tracking_uri=tracking_uri)


def _manifest(folder: Path) -> dict:
    from ..codec.store import read_manifest  # inside the folder, size-limited, one-line errors

    manifest = read_manifest(folder)
    if "fingerprint" not in manifest:
        raise ModelLoadError(f"{folder / 'manifest.json'}: not a ResULIC trained-codec manifest")
    return manifest


def register_codec(folder: str | Path, name: str, tags: dict[str, str] | None = None,
                   experiment: str = EXPERIMENT, tracking_uri: str | None = None) -> str:
    """Log ``folder`` as run artifacts under ``codec/`` and register it as a new version of ``name``.

    Returns the version number (as MLflow gives it, a string). Uses the client API, not the
    fluent run stack, so it works inside another active run and from any process.
    """
    from mlflow.exceptions import MlflowException

    folder = Path(folder)
    manifest = _manifest(folder)
    client = _client(tracking.tracking_uri(tracking_uri))
    experiment_id = tracking.ensure_experiment(client, experiment)
    version_tags = _version_tags(manifest)
    version_tags.update({k: str(v) for k, v in (tags or {}).items()})
    run = client.create_run(experiment_id, run_name=f"register-{name}", tags={"resulic.kind": "register", **version_tags})
    try:
        from ..codec.store import whole_folder

        with whole_folder(folder) as whole:  # a shipped folder's shared pieces written out: the copy stands alone
            client.log_artifacts(run.info.run_id, str(whole), ARTIFACT_DIR)
        _log_pyfunc_flavour(client, run.info.run_id)
        client.set_terminated(run.info.run_id)
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}"
    return _create_version(client, name, source, run.info.run_id, version_tags, manifest)


def register_run_codec(run_id: str, name: str, tags: dict[str, str] | None = None,
                       tracking_uri: str | None = None) -> str:
    """Register the codec a run logged under ``codec/`` as a new version of ``name``, linked to
    that run (its ``run_id`` and ``source``); nothing is copied. Returns the version number."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking.tracking_uri(tracking_uri))
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = _manifest(Path(client.download_artifacts(run_id, ARTIFACT_DIR + "/manifest.json", tmp)).parent)
    except MlflowException as exc:
        raise ModelLoadError(f"run {run_id} holds no trained codec under {ARTIFACT_DIR}/ ({exc.message})") from None
    version_tags = {**_version_tags(manifest), **{k: str(v) for k, v in (tags or {}).items()}}
    _log_pyfunc_flavour(client, run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}"
    return _create_version(client, name, source, run_id, version_tags, manifest)


def _log_pyfunc_flavour(client, run_id: str) -> None:
    """An ``MLmodel`` beside the codec in the run's ``codec/``: the version is then an MLflow
    pyfunc model too (``mlflow.pyfunc.load_model``, ``mlflow models serve``; resulic/services/pyfunc.py)."""
    from .pyfunc import write_mlmodel

    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(write_mlmodel(tmp)), ARTIFACT_DIR)


def _version_tags(manifest: dict) -> dict[str, str]:
    tags = {"fingerprint": str(manifest.get("fingerprint")), "rate_point": str(manifest.get("rate_point")),
            "backbone": str((manifest.get("backbone") or {}).get("profile"))}
    if manifest.get("earlier_fingerprints"):  # files it made through an earlier bundled prior
        tags["earlier_fingerprints"] = ",".join(map(str, manifest["earlier_fingerprints"]))
    return tags


def _create_version(client, name: str, source: str, run_id: str, tags: dict[str, str], manifest: dict) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                     description=f"ResULIC trained codec {manifest.get('fingerprint')}")
    return str(mv.version)


def trained_folder(uri: str, tracking_uri: str | None = None) -> str | None:
    """The trained-codec folder a registered version was trained into (``<storage>/<run>/model``
    of the run it is linked to), or None when that run does not record one."""
    mv = resolve(uri, tracking_uri)
    if not mv.run_id:
        return None
    tags = _client(existing_store(uri, tracking_uri)).get_run(mv.run_id).data.tags
    storage, run_name = tags.get(tracking.STORAGE_TAG), tags.get(tracking.RUN_NAME_TAG)
    if not storage or not run_name or tags.get("resulic.kind") == "register":
        return None
    from .storage import MODEL_DIR, join

    return join(storage, run_name, MODEL_DIR)


def set_alias(name: str, alias: str, version: str | int, tracking_uri: str | None = None) -> None:
    """Point ``models:/<name>@<alias>`` at ``version`` (e.g. alias 'champion')."""
    _client(tracking_uri).set_registered_model_alias(name, alias, str(version))


def existing_store(uri: str, tracking_uri: str | None = None) -> str:
    """The tracking URI to look ``uri`` up in; a ModelLoadError when it names a database that does not exist."""
    store = tracking.tracking_uri(tracking_uri)
    db = tracking.sqlite_path(store)
    if db is not None and not db.is_file():
        where = "" if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") else " (no tracking URI set: the default)"
        raise ModelLoadError(
            f"{uri}: no MLflow tracking store at {db}{where}; point at the one that holds the registry with "
            f"--tracking-uri URI or MLFLOW_TRACKING_URI=URI (e.g. sqlite:////path/to/resulic/mlflow.db or http://host:5000)"
        )
    return store


def resolve(uri: str, tracking_uri: str | None = None):
    """The MLflow ModelVersion a ``models:/`` URI names, or a ModelLoadError saying what is missing."""
    from mlflow.exceptions import MlflowException

    m = _URI.match(uri)
    if not m:
        raise ModelLoadError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    client = _client(existing_store(uri, tracking_uri))
    try:
        if m["alias"]:
            return client.get_model_version_by_alias(m["name"], m["alias"])
        return client.get_model_version(m["name"], m["version"])
    except MlflowException as exc:
        raise ModelLoadError(f"{uri}: not in the registry at {client.tracking_uri} ({exc.message})") from None


def fetch_codec(uri: str, dst: str | Path | None = None, tracking_uri: str | None = None) -> Path:
    """Download a registered codec and return the folder that holds its manifest.json."""
    import mlflow

    tracking_uri = existing_store(uri, tracking_uri)
    mv = resolve(uri, tracking_uri)
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix=f"resulic-{mv.name}-v{mv.version}-"))
    dst.mkdir(parents=True, exist_ok=True)
    # The version's source is the run's codec/ artifact folder: download exactly that.
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst), tracking_uri=tracking_uri))
    for candidate in (local, local / ARTIFACT_DIR):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise ModelLoadError(f"{uri}: version {mv.version} has no manifest.json (not a ResULIC codec folder)")


def open_codec(model: str | None = None, overrides=(), device="cpu", tracking_uri: str | None = None,
               rate: str | None = None, variable: bool = False, encode_only: bool = False):
    """The codec a command names: ``models:/<name>@<alias>`` or ``/<version>`` from the registry,
    else what ``resulic.codec.resolve.resolve_codec`` accepts (folder, model YAML, default;
    ``variable``: the shipped variable-rate model when the default is the shipped codecs;
    ``encode_only``: without what only a decoder needs, where the profile allows)."""
    from ..codec.store import load_codec
    from ..codec.resolve import resolve_codec

    if is_registry_uri(model):
        if overrides:
            raise ModelLoadError("--set cannot change a registered codec; it would no longer match its weights")
        return load_codec(fetch_codec(model, tracking_uri=tracking_uri), device=device, encode_only=encode_only)
    return resolve_codec(model, overrides, device=device, rate=rate, variable=variable, encode_only=encode_only)
