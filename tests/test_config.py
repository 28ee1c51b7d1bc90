"""Typed configs: unknown or ill-typed keys name the key and the file; dotted overrides."""

from pathlib import Path

import pytest

from resulic.config import MainJobConfig, ModelConfig, build_config, load_config, parse_overrides, read_yaml
from resulic.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_tiny_yaml_is_the_embedded_default():
    assert load_config(ModelConfig, REPO / "configs/model/tiny.yaml") == ModelConfig()


def test_every_shipped_config_validates():
    sd = load_config(ModelConfig, REPO / "configs/model/sd21.yaml")
    assert sd.backbone.profile == "sd21" and sd.compressor.groups == [16, 16, 32, 32, 96]
    assert sd.control.size_ratio == 0.2
    load_config(MainJobConfig, REPO / "configs/main.yaml")


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("rate_point:\n  sampling_step: 3\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: rate_point\.sampling_step: unknown key"):
        load_config(ModelConfig, path)


def test_ill_typed_key_names_key_and_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("compressor:\n  channels: many\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: compressor\.channels: .*integer"):
        load_config(ModelConfig, path)


def test_cross_field_rules(tmp_path):
    with pytest.raises(ConfigError, match=r"rate_point\.sampling_steps: .*exceeds residual_steps"):
        build_config(ModelConfig, {"rate_point": {"residual_steps": 2, "sampling_steps": 3}})


def test_overrides_are_typed_and_dotted():
    cfg = build_config(ModelConfig, {}, ["rate_point.sampling_steps=4", "compressor.groups=[8,8,8,8,16]"])
    assert cfg.rate_point.sampling_steps == 4 and cfg.compressor.groups == [8, 8, 8, 8, 16]
    with pytest.raises(ConfigError, match=r"--set rate_point\.guidance=abc.*rate_point\.guidance"):
        build_config(ModelConfig, {}, ["rate_point.guidance=abc"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="not a section"):
        build_config(ModelConfig, {"stride": 128}, ["stride.x=1"])


@pytest.mark.parametrize("text,message", [("- a\n- b\n", "top level must be a mapping"), ("a: [1,\n", "not valid YAML")])
def test_broken_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(ModelConfig, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(ModelConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(Path(__file__).resolve().parents[1]))
                                        for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")))
def test_every_shipped_config_loads(path, monkeypatch):
    """Each YAML under configs/ is valid for its schema (sweeps: their spaces too), run from the
    repository root as the README's commands are."""
    from resulic.config import MainJobConfig, SemanticsConfig, load_config
    from resulic.evaluation.evaluate import EvaluateConfig
    from resulic.train.config import TrainConfig
    from resulic.tune.promote import PromoteConfig
    from resulic.tune.sweep import Sweep, SweepConfig

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    kind = Path(path).parent.name
    if kind == "model":
        load_config(ModelConfig, path)
    elif kind == "train":
        load_config(TrainConfig, path, ["init_from=shipped:r2"] if "stage2" in path else [])
    elif kind == "sweep":
        Sweep.from_config(load_config(SweepConfig, path))
    elif kind == "promote":
        load_config(PromoteConfig, path)
    elif kind == "semantics":
        load_config(SemanticsConfig, path)
    elif Path(path).name == "main.yaml":
        load_config(MainJobConfig, path)
    else:
        load_config(EvaluateConfig, path)


@pytest.mark.parametrize("text,message", [
    ("a: &x [1, 2]\nb: *x\n", "anchors and aliases (&, *) are not allowed at line 1, column 4"),
    ("b: *x\n", "anchors and aliases"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 32 levels"),
    ("a: " + "[" * 50_000 + "]" * 50_000 + "\n", "nesting depth"),  # libyaml's own limit comes first
    ("a: !!python/object/apply:os.system [ls]\n", "could not determine a constructor for the tag"),
    ("a: !!binary AAAA\n", "the tag tag:yaml.org,2002:binary is not allowed"),
    ("a: !!set {x, y}\n", "the tag tag:yaml.org,2002:set is not allowed"),
    ("a: !foo bar\n", "could not determine a constructor for the tag '!foo'"),
])
def test_hostile_yaml_is_one_line(tmp_path, text, message):
    """Issue 25: a 900-byte alias bomb held the loader for minutes; tags gave four lines."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_dated_value_stays_text_and_sizes_are_capped(tmp_path):
    from resulic.config import MAX_YAML_BYTES, parse_yaml

    assert parse_yaml("d: 2024-01-01", "s") == {"d": "2024-01-01"}
    path = tmp_path / "big.yaml"
    path.write_text("a: '" + "x" * MAX_YAML_BYTES + "'\n")
    with pytest.raises(ConfigError, match=f"over the limit of {MAX_YAML_BYTES:,} bytes"):
        read_yaml(path)


def test_several_schema_errors_are_one_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("rate_point:\n  sampling_step: 3\ncompressor:\n  channels: many\n")
    with pytest.raises(ConfigError) as info:
        load_config(ModelConfig, path)
    assert "\n" not in str(info.value) and "; " in str(info.value)
