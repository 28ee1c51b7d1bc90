"""Search spaces, objectives and the Pareto front: no Ray, no training."""

import optuna
import pytest

from resulic.config import build_config
from resulic.errors import ConfigError
from resulic.train.config import TrainConfig
from resulic.tune.objective import ObjectiveConfig, dominates, pareto_front
from resulic.tune.space import POSITION, SearchSpace
from resulic.tune.sweep import Sweep, SweepConfig

SPACE = {
    "loss.lambda_rate": {"type": "loguniform", "low": 1.0, "high": 36.0},
    "model.rate_point.residual_steps": {
        "type": "int", "low": 50, "high": 300, "low_at_max": 500, "high_at_max": 800, "step": 5,
        "follows": "loss.lambda_rate",
    },
    "model.rate_point.gamma": {"type": "choice", "values": ["constant", "time_varying"]},
    "model.rate_point.sampling_steps": {"type": "int", "low": 2, "high": 5},
}


def test_sampled_values_stay_inside_the_conditional_space():
    space = SearchSpace(SPACE, TrainConfig())
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))
    for _ in range(40):
        trial = study.ask()
        derived = space.suggest(trial)
        values = {**SearchSpace.config_values(trial.params), **derived}
        assert space.contains(values), values
        assert not any(k.endswith(POSITION) for k in values)
        cfg = SearchSpace.apply(TrainConfig(), values)  # every sample is a valid training config
        assert cfg.model.rate_point.residual_steps == values["model.rate_point.residual_steps"]
        study.tell(trial, values["loss.lambda_rate"])
    # N_r grows with λ_R: the range at the top of λ_R lies above the range at the bottom
    assert space._range("model.rate_point.residual_steps", {"loss.lambda_rate": 36.0}) == (500, 800)
    assert space._range("model.rate_point.residual_steps", {"loss.lambda_rate": 1.0}) == (50, 300)


def test_published_points_seed_only_inside_the_space():
    space = SearchSpace(SPACE, TrainConfig())
    points = space.published_points({"model.rate_point.gamma": "constant", "model.rate_point.sampling_steps": 3})
    assert points and all(space.contains(p) for p in points)
    assert {p["loss.lambda_rate"] for p in points} <= {1.5, 3.5, 6.0, 9.0, 12.0, 16.0, 27.0}
    # and they convert to the sampler's parameters and back
    p = points[0]
    position = space.sampler_point(p)["model.rate_point.residual_steps" + POSITION]
    assert space._at("model.rate_point.residual_steps", position, p) == p["model.rate_point.residual_steps"]


@pytest.mark.parametrize(
    "key, spec, message",
    [
        ("loss.lambda_rat", {"type": "uniform", "low": 1, "high": 2}, "space.loss.lambda_rat: not a key of the training config"),
        ("loss.lambda_rate", {"type": "uniform", "low": 3, "high": 3}, r"space.loss.lambda_rate: .*empty range"),
        ("loss.lambda_rate", {"type": "loguniform", "low": 0, "high": 3}, r"space.loss.lambda_rate: .*must be > 0 on a log scale"),
        ("loss.lambda_rate", {"type": "loguniform", "low": 1, "high": 3, "scale": 2}, r"space.loss.lambda_rate: scale: unknown key"),
        ("model.rate_point.gamma", {"type": "choice", "values": []}, r"space.model.rate_point.gamma: .*at least one value"),
        ("model.rate_point.gamma", {"type": "choice", "values": ["linear"]}, r"space.model.rate_point.gamma: value 'linear' is not accepted"),
        ("model.rate_point.residual_steps", {"type": "int", "low": 5, "high": 50, "follows": "loss.lambda_rate",
                                             "low_at_max": 1, "high_at_max": 9}, r"follows: 'loss.lambda_rate' must be a float parameter listed before it"),
    ],
)
def test_malformed_spaces_fail_naming_the_key(key, spec, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace({key: spec}, TrainConfig())


def test_nested_and_dotted_spaces_are_the_same():
    nested = {"loss": {"lambda_rate": SPACE["loss.lambda_rate"]},
              "model": {"rate_point": {k.rsplit(".", 1)[1]: v for k, v in SPACE.items() if k.startswith("model.")}}}
    assert SearchSpace(nested, TrainConfig()).params == SearchSpace(SPACE, TrainConfig()).params


def test_sweep_config_is_checked_before_any_trial(tmp_path):
    bad = build_config(SweepConfig, {"space": {"optim.lr": {"type": "loguniform", "low": -1, "high": 1}}})
    with pytest.raises(ConfigError, match="space.optim.lr: .*> 0 on a log scale"):
        Sweep.from_config(bad)
    with pytest.raises(ConfigError, match="search.num_sample: unknown key"):
        build_config(SweepConfig, {"search": {"num_sample": 3}})
    with pytest.raises(ConfigError, match="stages: .*one stage-1 config"):
        build_config(SweepConfig, {"stages": []})


def test_pareto_front_never_holds_a_dominated_point():
    points = [(0.1, 0.5), (0.2, 0.3), (0.15, 0.6), (0.3, 0.1), (0.25, 0.35), (0.1, 0.5)]
    front = pareto_front(points)
    assert front == [0, 1, 3, 5]  # (0.15, 0.6) and (0.25, 0.35) are dominated; equal points both stay
    for i in front:
        assert not any(dominates(points[j], points[i]) for j in range(len(points)))
    assert pareto_front([]) == []


def test_scalar_objective_is_a_lagrangian():
    objective = ObjectiveConfig(distortion="val_lpips", beta=2.0)
    assert objective.value({"val_lpips": 0.3, "val_bpp_real": 0.05}) == pytest.approx(0.4)
    assert objective.value({"val_lpips": 0.3}) is None
    # a random-backbone LPIPS stands in only when there is no real one, under its own name
    assert objective.distortion_key({"val_lpips-random": 0.5, "val_bpp_real": 0.05}) == "val_lpips-random"
    assert objective.value({"val_lpips-random": 0.5, "val_bpp_real": 0.05}) == pytest.approx(0.6)
    assert objective.distortion_key({"val_lpips": 0.3, "val_lpips-random": 0.5}) == "val_lpips"
    assert ObjectiveConfig(mode="pareto").metrics == ["val_bpp_real", "val_lpips"]


def test_the_time_varying_gamma_cannot_be_drawn_with_another_eta():
    """A space that varies γ and η may not pair the time-varying γ with η ≠ 1 (RESULIC.md §3.4)."""
    clash = {**SPACE, "model.rate_point.eta": {"type": "uniform", "low": 0.0, "high": 1.0}}
    with pytest.raises(ConfigError, match=r"space.model.rate_point.eta: value 0.0 cannot be drawn together with "
                                          r"model.rate_point.gamma = 'time_varying'"):
        SearchSpace(clash, TrainConfig())
    SearchSpace({**SPACE, "model.rate_point.eta": {"type": "choice", "values": [1.0]}}, TrainConfig())
    # a base config that fixes η = 0 cannot be swept over the time-varying γ either
    base = build_config(TrainConfig, {}, ["model.rate_point.eta=0"])
    with pytest.raises(ConfigError, match="space.model.rate_point.gamma: value 'time_varying' is not accepted"):
        SearchSpace(SPACE, base)


def test_shipped_sweeps_decode_each_gamma_with_its_eta():
    from resulic.config import load_config, read_yaml

    for path in ("configs/sweep/tiny.yaml", "configs/sweep/sd21.yaml"):
        sweep = build_config(SweepConfig, read_yaml(path), source=path)
        for stage in sweep.stages:
            base = load_config(TrainConfig, stage)
            space = SearchSpace(sweep.space, base)  # the pairwise check passes
            assert "model.rate_point.eta" not in space.params
            for gamma, eta in (("constant", 0.0), ("time_varying", 1.0)):
                cfg = SearchSpace.apply(base, {"model.rate_point.gamma": gamma})
                assert cfg.model.rate_point.resolved_eta == eta, (path, stage, gamma)


def test_values_that_clash_with_each_other_are_refused_before_any_trial():
    clash = {**SPACE, "model.rate_point.sampling_steps": {"type": "int", "low": 2, "high": 60}}
    with pytest.raises(ConfigError, match="space.model.rate_point.sampling_steps: value 60 cannot be drawn together"):
        SearchSpace(clash, TrainConfig())


def test_a_variable_rate_models_range_and_nr_mapping_are_searched_as_choices():
    """Lists (λ_R per anchor, N_r per anchor) are sampled by index: Optuna sees primitives, the
    trial gets the list, and given points map back to their index."""
    from resulic.tune.space import CHOICE

    base = TrainConfig.model_validate({"model": {
        "compressor": {"gain_anchors": 3},
        "rate_point": {"sampling_steps": 2, "variable": {"lambda_rates": [8.0, 2.0, 0.5], "residual_steps": [60, 40, 20]}},
    }})
    ranges = [[8.0, 2.0, 0.5], [16.0, 4.0, 1.0]]
    mappings = [[60, 40, 20], [100, 50, 20], [30, 30, 30]]
    space = SearchSpace({"model.rate_point.variable.lambda_rates": {"type": "choice", "values": ranges},
                         "model.rate_point.variable.residual_steps": {"type": "choice", "values": mappings}}, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = {**SearchSpace.config_values(trial.params), **space.suggest(trial)}
        assert all(isinstance(v, int) for k, v in trial.params.items() if k.endswith(CHOICE))
        assert space.contains(values)
        cfg = SearchSpace.apply(base, values)
        assert cfg.model.rate_point.variable.residual_steps == values["model.rate_point.variable.residual_steps"]
        seen.add(tuple(values["model.rate_point.variable.residual_steps"]))
        study.tell(trial, 0.0)
    assert len(seen) > 1
    point = {"model.rate_point.variable.lambda_rates": ranges[1], "model.rate_point.variable.residual_steps": mappings[2]}
    assert space.sampler_point(point) == {"model.rate_point.variable.lambda_rates" + CHOICE: 1,
                                          "model.rate_point.variable.residual_steps" + CHOICE: 2}
    with pytest.raises(ConfigError, match="residual_steps"):  # a mapping the model refuses, before any trial
        SearchSpace({"model.rate_point.variable.residual_steps": {"type": "choice", "values": [[60, 40]]}}, base)
