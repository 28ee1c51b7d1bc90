"""RD plots read well on any range: distinct legend labels, plain tick labels that do not overlap."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from resulic.cli.evaluation_commands import add_parsers
from resulic.evaluation.plots import distinct_labels, rd_figure, readable_ticks


def _results(path, name, bpp, lpips):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "results": {"bpp": bpp, "lpips": lpips}}))
    return path


def _drawn_labels(axis):
    """The tick labels drawn: visible, not empty, and at a tick inside the view (after a draw)."""
    lo, hi = sorted(axis.get_view_interval())
    at = 0 if axis.axis_name == "x" else 1
    return [t for t in axis.get_ticklabels(which="both")
            if t.get_visible() and t.get_text() and lo <= t.get_position()[at] <= hi]


def _tick_texts(axis) -> list[str]:
    return [t.get_text() for t in _drawn_labels(axis)]


def _overlapping(fig, axis) -> list[tuple[str, str]]:
    """Pairs of visible tick labels whose drawn boxes intersect."""
    renderer = fig.canvas.get_renderer()
    labels = _drawn_labels(axis)
    boxes = [(t.get_window_extent(renderer), t.get_text()) for t in labels]
    return [(a[1], b[1]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a[0].overlaps(b[0])]


def test_anchors_with_the_same_name_get_distinct_labels(tmp_path):
    a = _results(tmp_path / "ResULIC" / "kodak.json", "ResULIC", [0.02, 0.05], [0.3, 0.2])
    b = _results(tmp_path / "ResULIC_Pfo" / "kodak.json", "ResULIC", [0.02, 0.05], [0.28, 0.18])
    c = _results(tmp_path / "vvc.json", "VVC", [0.02, 0.05], [0.5, 0.4])
    fig = rd_figure([a, b, c], "lpips")
    try:
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert texts == ["ResULIC (ResULIC/kodak)", "ResULIC (ResULIC_Pfo/kodak)", "VVC"]


def test_distinct_labels_number_the_same_file_given_twice():
    assert distinct_labels(["x", "x", "y"], ["a/r.json", "a/r.json", "b.json"]) == ["x (a/r)", "x (a/r) #2", "y"]


@pytest.mark.parametrize("bpp", [
    [0.2278, 0.22781, 0.227815],  # the sweep's narrow range: was "1e−5+2.278e−1"
    [0.021, 0.024, 0.029],  # less than a decade on a log axis: minor labels smeared together
    [0.004, 0.03, 0.2, 1.5],  # several decades
])
def test_bpp_ticks_are_plain_numbers_that_do_not_overlap(tmp_path, bpp):
    path = _results(tmp_path / "ours.json", "ours", bpp, [0.5 - 0.01 * i for i in range(len(bpp))])
    fig = rd_figure([path], "lpips")
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        texts = _tick_texts(ax.xaxis)
        assert len(texts) >= 2, texts
        assert all("e" not in t and "×" not in t and "10^" not in t for t in texts), texts
        assert ax.xaxis.get_major_formatter().get_offset() == ""
        assert _overlapping(fig, ax.xaxis) == []
        # every label is a number within the plotted range
        values = [float(t.replace("\N{MINUS SIGN}", "-")) for t in texts]
        lo, hi = ax.get_xlim()
        assert all(lo <= v <= hi for v in values)
    finally:
        plt.close(fig)


def test_linear_axis_over_a_narrow_range_has_no_offset():
    fig, ax = plt.subplots(figsize=(5, 4))
    try:
        ax.scatter([0.2278, 0.22781, 0.227815], [0.41, 0.4101, 0.4102])
        readable_ticks(ax.xaxis)
        readable_ticks(ax.yaxis)
        fig.canvas.draw()
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_major_formatter().get_offset() == ""
            assert all("e" not in t for t in _tick_texts(axis))
            assert _overlapping(fig, axis) == []
    finally:
        plt.close(fig)


def test_bd_rate_help_shows_a_single_percent_sign():
    import argparse

    parser = argparse.ArgumentParser(prog="resulic")
    add_parsers(parser.add_subparsers(dest="command"))
    help_text = parser._subparsers._group_actions[0].choices["bd-rate"].format_help()
    assert "BD-rate (%) of TEST" in help_text
    assert "%%" not in help_text


def test_learning_curves_draw_stage0_runs_one_after_the_other_and_refuse_an_empty_run(tmp_path, capsys):
    """benchmarks/plot_learning_curves.py on a real SQLite MLflow store: two stage-0 runs (ε-loss,
    held-out ε-loss) drawn on one step axis, the second after the first; a run that logged none of
    the curves is one line, not an empty figure."""
    import importlib.util
    from pathlib import Path

    from mlflow import MlflowClient

    spec = importlib.util.spec_from_file_location(
        "plot_learning_curves", Path(__file__).parents[1] / "benchmarks" / "plot_learning_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("resulic-train", artifact_location=str(tmp_path / "artifacts"))
    for name, first in (("prior-a", 0.50), ("prior-b", 0.46)):
        run = client.create_run(experiment, run_name=name).info.run_id
        for step in range(1, 301):
            client.log_metric(run, "loss_eps", first - step * 1e-4, step=step) if step % 10 == 0 else None
        for step in (100, 200, 300):
            client.log_metric(run, "val_loss_eps", first - step * 1e-4, step=step)
    client.create_run(experiment, run_name="empty")
    out = tmp_path / "curves.png"
    assert module.main(["prior-a", "prior-b", "--tracking-uri", uri, "-o", str(out), "--smooth", "5"]) == 0
    assert out.stat().st_size > 10_000
    figure = plt.gcf()
    bottom = figure.axes[1]
    (first, second) = [line for line in bottom.get_lines() if line.get_marker() == "s"]
    assert list(first.get_xdata()) == [100, 200, 300] and list(second.get_xdata()) == [400, 500, 600]
    assert module.main(["empty", "--tracking-uri", uri, "-o", str(tmp_path / "x.png")]) == 2
    assert "nothing to plot" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
