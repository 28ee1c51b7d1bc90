"""Promotion: the best trial of a sweep per rate band becomes a version of one registered model,
and the band's champion alias moves to it only when it beats the current champion.

Reads the sweep's ``sweep/results.json`` from its MLflow parent run; each trial's trained codec is
the ``codec/`` artifact folder of its final-stage child run, and the version is registered from
that run (its ``run_id`` and ``source``: the UI links a version to the trial that trained it). Aliases: ``champion`` when there is
one band, ``champion-<band>`` for each band when there are several. The comparison uses the
metric recorded as a version tag (lower is better, except psnr).

A champion is never chosen by a random network: when the sweep's distortion was measured through
a random backbone (``val_lpips-random``: training had no VGG16 weights), ranking by ``objective``
or ``distortion`` falls back to the validation PSNR of the same real files, and says so.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from ..services import registry, tracking
from ..config import StrictModel
from ..errors import ConfigError, ModelLoadError, ResulicError
from ..metrics.weights import RANDOM_SUFFIX
from .sweep import SWEEP_TAG


class RateBand(StrictModel):
    name: str
    max_bpp: float = Field(gt=0, description="trials with real validation bpp up to this (and above the previous band)")


class PromoteConfig(StrictModel):
    sweep: str = Field("sweep-tiny", description="the sweep's name (its MLflow parent run)")
    experiment: str = "resulic-sweeps"
    tracking_uri: str | None = None
    model_name: str = "resulic"
    metric: str = Field("objective", description="objective, distortion or bpp (lower is better) or psnr (higher)")
    bands: list[RateBand] = Field(default_factory=lambda: [RateBand(name="all", max_bpp=100.0)])
    force: bool = Field(False, description="move the alias even when the new version is not better")

    @field_validator("bands")
    @classmethod
    def _ordered(cls, bands: list[RateBand]) -> list[RateBand]:
        if not bands:
            raise ValueError("at least one band")
        edges = [b.max_bpp for b in bands]
        if edges != sorted(edges) or len(set(b.name for b in bands)) != len(bands):
            raise ValueError("bands must have unique names and increasing max_bpp")
        return bands

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in ("objective", "distortion", "bpp", "psnr"):
            raise ValueError("one of objective, distortion, bpp, psnr")
        return metric


@dataclass
class Promotion:
    band: str
    alias: str
    trial_id: str
    version: str
    value: float
    previous: float | None  # the champion's value before, if any
    moved: bool
    metric: str = "objective"  # what the trials were ranked by
    note: str = ""  # why that is not the configured metric


def alias_for(cfg: PromoteConfig, band: RateBand) -> str:
    return "champion" if len(cfg.bands) == 1 else f"champion-{band.name}"


def ranking_metric(cfg: PromoteConfig, rows: list[dict]) -> tuple[str, str]:
    """The metric trials are ranked by, and why it is not ``cfg.metric`` (or "")."""
    random = sorted({str(r.get("distortion_metric")) for r in rows
                     if str(r.get("distortion_metric") or "").endswith(RANDOM_SUFFIX)})
    if cfg.metric in ("objective", "distortion") and random:
        return "psnr", (f"the sweep's distortion is {random[0]}, measured through a random network (no VGG16 "
                        f"weights), which no champion is chosen by: ranked by validation PSNR instead (real, higher is "
                        f"better); set loss.lpips_vgg_weights to rank by LPIPS")
    return cfg.metric, ""


def better(metric: str, value: float, than: float) -> bool:
    return value > than if metric == "psnr" else value < than


def sweep_rows(client, cfg: PromoteConfig) -> list[dict]:
    experiment = client.get_experiment_by_name(cfg.experiment)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{cfg.sweep}' and tags.kind = 'sweep'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        raise ConfigError(f"sweep: no sweep named {cfg.sweep!r} in experiment {cfg.experiment!r} at {client.tracking_uri}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(runs[0].info.run_id, "sweep/results.json", tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            raise ResulicError(f"sweep {cfg.sweep!r} has no results yet (did it finish?)") from None
        return json.loads(Path(path).read_text())


def promote(cfg: PromoteConfig) -> list[Promotion]:
    uri = tracking.tracking_uri(cfg.tracking_uri)
    client = tracking.client(uri)
    rows = [r for r in sweep_rows(client, cfg) if r.get("bpp") is not None and r.get("final_run")]
    metric, note = ranking_metric(cfg, rows)
    rows = [r for r in rows if r.get(metric) is not None]
    out = []
    lower = 0.0
    for band in cfg.bands:
        candidates = [r for r in rows if lower < r["bpp"] <= band.max_bpp]
        lower = band.max_bpp
        if not candidates:
            continue
        best = max(candidates, key=lambda r: r[metric]) if metric == "psnr" else min(candidates, key=lambda r: r[metric])
        out.append(_register_and_maybe_promote(client, uri, cfg, band, best, metric, note))
    if not out:
        raise ResulicError(f"sweep {cfg.sweep!r}: no finished trial falls in any rate band")
    return out


def _existing_version(client, cfg: PromoteConfig, row: dict, metric: str) -> str | None:
    """The version already registered from this trial's run (promoting twice adds nothing)."""
    for mv in client.search_model_versions(f"name = '{cfg.model_name}'"):
        if mv.tags.get("training_run") == row["final_run"] and mv.tags.get("metric") == metric:
            return str(mv.version)
    return None


def _register_and_maybe_promote(client, uri: str, cfg: PromoteConfig, band: RateBand, row: dict, metric: str,
                                note: str) -> Promotion:
    alias = alias_for(cfg, band)
    value = float(row[metric])
    previous = _champion_value(client, cfg, alias, metric)
    version = _existing_version(client, cfg, row, metric) or _register(client, uri, cfg, band, row, metric, value)
    moved = cfg.force or previous is None or better(metric, value, previous)
    if moved:
        registry.set_alias(cfg.model_name, alias, version, tracking_uri=uri)
    return Promotion(band.name, alias, row["trial_id"], version, value, previous, moved, metric, note)


def _register(client, uri: str, cfg: PromoteConfig, band: RateBand, row: dict, metric: str, value: float) -> str:
    """A new version linked to the trial's own run (the one that trained and logged the codec)."""
    tags = {
        "rate_band": band.name, "bpp_real": f"{row['bpp']:.6g}", "metric": metric,
        "metric_value": f"{value:.6g}", "distortion": f"{row['distortion']:.6g}",
        "objective": f"{row['objective']:.6g}", "sweep": cfg.sweep,
        "distortion_metric": str(row.get("distortion_metric")), "trial_id": row["trial_id"],
        "training_run": row["final_run"], **{f"param.{k}": str(v) for k, v in row["values"].items()},
    }
    try:
        return registry.register_run_codec(row["final_run"], cfg.model_name, tags, tracking_uri=uri)
    except ModelLoadError as exc:
        raise ResulicError(f"trial {row['trial_id']}: {exc}") from None


def _champion_value(client, cfg: PromoteConfig, alias: str, metric: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(cfg.model_name, alias)
    except MlflowException:
        return None
    if current.tags.get("metric") != metric:
        return None  # ranked by another metric: not comparable, the new version takes over
    try:
        return float(current.tags["metric_value"])
    except (KeyError, ValueError):
        return None


def format_promotions(promotions: list[Promotion], model_name: str) -> str:
    lines = list(dict.fromkeys(f"note: {p.note}" for p in promotions if p.note))
    for p in promotions:
        before = "none" if p.previous is None else f"{p.previous:.4g}"
        verdict = "alias moved" if p.moved else "kept the champion (not better)"
        lines.append(f"{p.band}: trial {p.trial_id} -> models:/{model_name}/{p.version} ({p.metric} {p.value:.4g} vs champion {before}): "
                     f"{verdict}; models:/{model_name}@{p.alias}")
    return "\n".join(lines)


# -- the main job's gated promotion ------------------------------------------------------------

@dataclass
class GatedPromotion:
    model: str  # what to use and serve: the champion's models:/ URI, or the shipped codec's folder
    verdict: object  # gate.Verdict
    promotion: Promotion | None  # when the candidate was promoted
    kept: str  # "" when promoted; else what was kept ("the shipped codec", "the champion")

    def report(self, model_name: str) -> str:
        from .gate import table

        lines = [table(self.verdict)]
        if self.promotion is not None:
            lines.append(f"promoted: {self.verdict.reason}; " + format_promotions([self.promotion], model_name))
        else:
            lines.append(f"kept {self.kept}: the best trial is not better ({self.verdict.reason}); serving {self.model}")
        return "\n".join(lines)


def gated_promotion(cfg: PromoteConfig, images, progress=None) -> GatedPromotion:
    """The sweep's best trial (lowest objective among finished trials) against the current champion
    or, with none, the shipped codec, on ``images`` (held out from the sweep's data) through real
    files; promoted only when ``gate.judge`` says it is better (tune/gate.py: equal or lower bpp,
    PSNR gain above the noise). The shipped codec is the baseline: evaluated, never trained."""
    import mlflow

    from ..codec import shipped
    from ..codec.store import load_codec
    from . import gate

    if len(cfg.bands) != 1:
        raise ConfigError("the gated promotion compares one champion: use one rate band")
    uri = tracking.tracking_uri(cfg.tracking_uri)
    client = tracking.client(uri)
    rows = [r for r in sweep_rows(client, cfg) if r.get("final_run") and r.get("objective") is not None]
    if not rows:
        raise ResulicError(f"sweep {cfg.sweep!r}: no trial finished with a result")
    best = min(rows, key=lambda r: r["objective"])
    alias = alias_for(cfg, cfg.bands[0])
    champion = f"models:/{cfg.model_name}@{alias}"
    try:
        version = registry.resolve(champion, uri)
        reference_model, kept = champion, f"the champion ({champion}, version {version.version})"
        reference_codec = registry.open_codec(champion, tracking_uri=uri)
        label = f"champion, version {version.version}"
    except ModelLoadError:
        reference_codec = shipped.load()
        reference_model, kept = str(shipped.folder_for(None)), "the shipped codec"
        label = f"the shipped codec ({reference_codec.config.rate_point.name}, not trained)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = mlflow.artifacts.download_artifacts(run_id=best["final_run"], artifact_path=registry.ARTIFACT_DIR,
                                                     dst_path=tmp, tracking_uri=uri)
        candidate_codec = load_codec(folder)
    candidate = gate.measure(candidate_codec, images, f"trial {best['trial_id']} (best objective)", progress)
    reference = gate.measure(reference_codec, images, label, progress)
    verdict = gate.judge(candidate, reference)
    if not verdict.better:
        return GatedPromotion(reference_model, verdict, None, kept)
    promotion = _register_and_maybe_promote(client, uri, cfg.model_copy(update={"force": True}), cfg.bands[0], best,
                                            "objective", "")
    return GatedPromotion(champion, verdict, promotion, "")
