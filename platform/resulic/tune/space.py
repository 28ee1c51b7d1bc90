"""Search spaces from YAML: which training-config keys a sweep varies, over what ranges, and the
conditional range of N_r that grows with λ_R (RESULIC.md §3.7, §4). No Ray here.

A parameter is named by its key in the training config, nested as there (or dotted)::

    loss:
      lambda_rate: {type: loguniform, low: 1.0, high: 36.0}
    model:
      rate_point:
        residual_steps:
          type: int
          low: 50                  # the range at the lowest value of `follows`
          high: 300
          low_at_max: 400          # ... and at its highest; in between, log-linear
          high_at_max: 800
          follows: loss.lambda_rate
        gamma: {type: choice, values: [constant, time_varying]}   # each with its own η

so that ``--set space.loss.lambda_rate.high=20`` reaches a bound.

Everything is checked before any trial starts: unknown keys (of the spec or of the training
config), empty ranges, non-positive bounds on a log scale, a `follows` that is not a sampled
float parameter listed before it, and pairs of values the training config refuses together (a
space that varies both γ and η may not offer the time-varying γ with η ≠ 1; leave η out and
each variant is decoded with its own, RESULIC.md §3.4).
"""

from __future__ import annotations

import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..config import StrictModel, build_config
from ..errors import ConfigError
from ..train.config import TrainConfig

# (stage-2 λ_R, N_r) of the published configs (RESULIC.md §4 table), to seed a search.
POSITION = "@position"  # suffix of the sampled relative position of a conditional parameter
CHOICE = "@choice"  # suffix of the sampled index of a choice among lists (e.g. a variable model's N_r per anchor)
PUBLISHED_GRID = [(1.5, 100), (3.5, 300), (6.0, 300), (9.0, 405), (12.0, 495), (16.0, 600), (27.0, 600)]


class ParameterSpec(StrictModel):
    type: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: int = Field(1, ge=1, description="int only")
    values: list[Any] | None = None
    follows: str | None = None
    low_at_max: float | None = None
    high_at_max: float | None = None

    @model_validator(mode="after")
    def _ranges(self) -> "ParameterSpec":
        if self.type == "choice":
            if not self.values:
                raise ValueError("values: a choice needs at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("low and high are required")
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"low: {self.low} must be > 0 on a log scale")
        if self.follows is not None:
            if self.low_at_max is None or self.high_at_max is None:
                raise ValueError("low_at_max and high_at_max are required with follows")
            if not self.low_at_max < self.high_at_max:
                raise ValueError("empty range: low_at_max must be below high_at_max")
        elif self.low_at_max is not None or self.high_at_max is not None:
            raise ValueError("low_at_max/high_at_max need follows")
        return self


def _primitive(values: list[Any]) -> bool:
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in values)


def _is_schema_key(schema: type[BaseModel], parts: list[str]) -> bool:
    """Whether dotted ``parts`` name a field of ``schema`` (through nested config sections).
    The schema is asked, not a dump: fields at their default may be left out of dumps."""
    node: type[BaseModel] | None = schema
    for i, part in enumerate(parts):
        if node is None or part not in node.model_fields:
            return False
        if i + 1 < len(parts):
            annotation = node.model_fields[part].annotation
            options = typing.get_args(annotation) or (annotation,)
            node = next((t for t in options if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return True


def flatten_space(raw: dict, prefix: str = "") -> dict[str, dict]:
    """Nested sections (``loss: {lambda_rate: {type: …}}``) or dotted keys (``loss.lambda_rate``)
    -> dotted keys. A mapping with a ``type`` is a parameter; any other mapping is a section."""
    out: dict[str, dict] = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and "type" not in value and value:
            out.update(flatten_space(value, dotted))
        else:
            out[dotted] = value
    return out


class SearchSpace:
    """Validated parameters, in order (a parameter may follow only one listed before it)."""

    def __init__(self, raw: dict, base: TrainConfig, source: str = "space") -> None:
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"{source}: must map training-config keys to parameter specs")
        raw = flatten_space(raw)
        self.params: dict[str, ParameterSpec] = {}
        for key, spec in raw.items():
            if not isinstance(spec, dict):
                raise ConfigError(f"{source}.{key}: must be a mapping with a type")
            self.params[key] = build_config(ParameterSpec, spec, source=f"{source}.{key}")
            p = self.params[key]
            if p.follows is not None:
                leader = self.params.get(p.follows)
                if leader is None or p.follows == key or leader.type not in ("loguniform", "uniform"):
                    raise ConfigError(
                        f"{source}.{key}.follows: {p.follows!r} must be a float parameter listed before it"
                    )
        self._check_keys(base, source)

    def _check_keys(self, base: TrainConfig, source: str) -> None:
        """Each key must be a training-config key that accepts the range's end points, and every
        pair of parameters must accept each other's end points: values that pass alone may still
        clash (the time-varying γ with an η other than 1, S above N_r), and no trial may draw a
        pair the config refuses."""
        for key, p in self.params.items():
            if not _is_schema_key(TrainConfig, key.split(".")):
                raise ConfigError(f"{source}.{key}: not a key of the training config")
            for value in self.extremes(key):
                try:
                    self.apply(base, {key: value})
                except ConfigError as exc:
                    raise ConfigError(f"{source}.{key}: value {value!r} is not accepted ({exc})") from None
        keys = list(self.params)
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                for a in self.extremes(first):
                    for b in self.extremes(second):
                        try:
                            self.apply(base, {first: a, second: b})
                        except ConfigError as exc:
                            raise ConfigError(
                                f"{source}.{second}: value {b!r} cannot be drawn together with {first} = {a!r} ({exc})"
                            ) from None

    def extremes(self, key: str) -> list[Any]:
        p = self.params[key]
        if p.type == "choice":
            return list(p.values or [])
        ends = [p.low, p.high] + ([p.low_at_max, p.high_at_max] if p.follows else [])
        return [int(v) if p.type == "int" else v for v in ends]

    # -- sampling (Optuna define-by-run) ------------------------------------------------------
    def suggest(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: sample every parameter, conditional ranges included.

        A parameter that follows another is sampled as its relative position in the range the
        leader's value gives (``<key>@position`` in [0, 1]) and its value returned as a constant:
        the sampler then always sees the same distribution, which TPE needs to learn from earlier
        trials (a range that moves from trial to trial would leave it sampling at random).
        """
        sampled: dict[str, Any] = {}
        derived: dict[str, Any] = {}
        for key, p in self.params.items():
            if p.type == "choice" and not _primitive(p.values):
                # Optuna's categorical values must be primitives: sample the index, return the value.
                sampled[key] = derived[key] = p.values[trial.suggest_categorical(key + CHOICE, list(range(len(p.values))))]
            elif p.type == "choice":
                sampled[key] = trial.suggest_categorical(key, p.values)
            elif p.follows is not None:
                position = trial.suggest_float(key + POSITION, 0.0, 1.0)
                sampled[key] = derived[key] = self._at(key, position, sampled)
            elif p.type == "int":
                sampled[key] = trial.suggest_int(key, int(p.low), int(p.high), step=p.step)
            else:
                sampled[key] = trial.suggest_float(key, p.low, p.high, log=p.type == "loguniform")
        return derived

    def _at(self, key: str, position: float, sampled: dict[str, Any]) -> float | int:
        p = self.params[key]
        lo, hi = self._range(key, sampled)
        value = lo + position * (hi - lo)
        if p.type == "int":  # multiples of step inside the range
            first, last = math.ceil(lo / p.step) * p.step, math.floor(hi / p.step) * p.step
            value = max(first, min(int(round(value / p.step)) * p.step, last))
        return value

    def sampler_point(self, point: dict[str, Any]) -> dict[str, Any]:
        """A point in config values -> the sampler's parameters (positions for followers)."""
        out = {}
        for key, p in self.params.items():
            if p.type == "choice" and not _primitive(p.values):
                out[key + CHOICE] = p.values.index(point[key])
            elif p.follows is None:
                out[key] = point[key]
            else:
                lo, hi = self._range(key, point)
                out[key + POSITION] = (point[key] - lo) / (hi - lo)
        return out

    @staticmethod
    def config_values(params: dict[str, Any]) -> dict[str, Any]:
        """Drop the sampler-only position parameters."""
        return {k: v for k, v in params.items() if not k.endswith((POSITION, CHOICE))}

    def _range(self, key: str, sampled: dict[str, Any]) -> tuple[float, float]:
        p = self.params[key]
        if p.type == "choice":
            return 0.0, 0.0
        if p.follows is None:
            return p.low, p.high  # type: ignore[return-value]
        leader = self.params[p.follows]
        x = sampled[p.follows]
        if leader.type == "loguniform":
            frac = math.log(x / leader.low) / math.log(leader.high / leader.low)  # type: ignore[operator]
        else:
            frac = (x - leader.low) / (leader.high - leader.low)  # type: ignore[operator]
        lo = p.low + frac * (p.low_at_max - p.low)  # type: ignore[operator]
        hi = p.high + frac * (p.high_at_max - p.high)  # type: ignore[operator]
        return lo, hi

    def contains(self, point: dict[str, Any]) -> bool:
        """Whether a point (e.g. a published one) lies inside the space, conditions included."""
        if set(point) != set(self.params):
            return False
        for key, p in self.params.items():
            value = point[key]
            if p.type == "choice":
                if value not in (p.values or []):
                    return False
                continue
            lo, hi = self._range(key, point)
            if not lo <= value <= hi:
                return False
        return True

    def given_points(self, defaults: dict[str, Any], points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A config's own starting points, completed with the defaults; one outside the space is
        an error naming it (unlike the published grid, these were asked for)."""
        out = []
        for i, given in enumerate(points):
            unknown = set(given) - set(self.params)
            if unknown:
                raise ConfigError(f"search.points[{i}]: {sorted(unknown)} are not keys of the space")
            point = {k: v for k, v in {**defaults, **given}.items() if k in self.params}
            if not self.contains(point):
                raise ConfigError(f"search.points[{i}]: {given} lies outside the space")
            out.append(point)
        return out

    def published_points(self, defaults: dict[str, Any]) -> list[dict[str, Any]]:
        """The published (λ_R, N_r) grid as starting points, where it lies inside the space."""
        points = []
        for lam, n_r in PUBLISHED_GRID:
            point = {**defaults, "loss.lambda_rate": lam, "model.rate_point.residual_steps": n_r}
            point = {k: v for k, v in point.items() if k in self.params}
            if self.contains(point):
                points.append(point)
        return points

    # -- into a training config ----------------------------------------------------------------
    @staticmethod
    def apply(base: TrainConfig, values: dict[str, Any], extra: list[str] = ()) -> TrainConfig:
        overrides = [f"{k}={v}" for k, v in values.items()] + list(extra)
        return build_config(TrainConfig, base.model_dump(mode="json"), overrides, source="trial")
