"""Numbers the README and docs quote from files in the repository, checked against those files
(cheap ones: the shipped weights' index and manifests, the demo sweep's config). Measured numbers
(times, Kodak tables) come from runs whose outputs are not committed; they are not checked here."""

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODECS = REPO / "platform/resulic/weights/small-codecs"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _points() -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((CODECS / "index.json").read_text())["points"]}


def test_quoted_fingerprints_of_shipped_points_are_theirs():
    """"the shipped `variable` (fingerprint 1d0053b2)": the index's and the folder's manifest's."""
    points, quoted = _points(), 0
    for doc in DOCS:
        for name, fingerprint in re.findall(r"shipped `(\w+)`(?: point)? \(fingerprint ([0-9a-f]{8})\)", doc.read_text()):
            assert name in points, f"{doc.name}: no shipped point {name}"
            manifest = json.loads((CODECS / points[name]["folder"] / "manifest.json").read_text())
            assert fingerprint == points[name]["fingerprint"] == manifest["fingerprint"], f"{doc.name}: {name}"
            quoted += 1
    assert quoted >= 2


def test_the_demo_sweep_is_centred_on_the_shipped_r2_as_the_docs_say():
    """configs/sweep/small-finetune.yaml's first trial is r2's configuration (index.json), and
    docs/sweeps.md quotes the same λ_R and N_r."""
    r2 = _points()["r2"]
    sweep = yaml.safe_load((REPO / "configs/sweep/small-finetune.yaml").read_text())
    assert "init_from=shipped:r2" in sweep["trial_overrides"]
    first = sweep["search"]["points"][0]
    assert first == {"loss.lambda_rate": r2["trained_lambda_rate"], "model.rate_point.residual_steps": r2["residual_steps"]}
    space = sweep["space"]
    assert space["loss"]["lambda_rate"]["low"] <= r2["trained_lambda_rate"] <= space["loss"]["lambda_rate"]["high"]
    text = " ".join((REPO / "docs/sweeps.md").read_text().split())
    assert f"fine-tuning `r2` (trained at λ_R {r2['trained_lambda_rate']:g}, N_r {r2['residual_steps']})" in text
    low, high = space["loss"]["lambda_rate"]["low"], space["loss"]["lambda_rate"]["high"]
    n = space["model"]["rate_point"]["residual_steps"]
    assert f"λ_R in {low:g}–{high:g} and N_r {n['low']}–{n['high']}" in text


def test_the_readme_names_the_shipped_default():
    """README: the shipped default is the variable-rate model (index.json's default)."""
    index = json.loads((CODECS / "index.json").read_text())
    text = " ".join((REPO / "README.md").read_text().split())
    assert index["default"] == "variable" and "the shipped default: the variable-rate model" in text
