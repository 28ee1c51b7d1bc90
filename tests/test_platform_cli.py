"""The platform subcommands' argument handling and one-line errors (no Ray started)."""

import subprocess
import sys
from pathlib import Path

from resulic.cli.commands import main

REPO = Path(__file__).resolve().parents[1]


def test_config_errors_are_one_line(capsys):
    assert main(["train", "--config", "configs/train/stage1.yaml", "--set", "optim.stpes=3"]) == 2
    assert "optim.stpes: unknown key" in capsys.readouterr().err
    assert main(["sweep", "--config", "configs/sweep/tiny.yaml", "--set", "space.loss.lambda_rate.low=0"]) == 2
    assert "space.loss.lambda_rate: low: 0.0 must be > 0 on a log scale" in capsys.readouterr().err
    assert main(["promote", "--config", "configs/promote/tiny.yaml", "--set", "metric=ssim"]) == 2
    assert "metric: " in capsys.readouterr().err


def test_job_files_are_the_subcommands():
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "sweep.py"), "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "usage: resulic sweep" in out.stdout
