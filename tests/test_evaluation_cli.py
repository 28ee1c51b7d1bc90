"""The evaluation entrypoints: resulic bd-rate / plot / evaluate / baselines and jobs/evaluate.py."""

import json

from resulic.cli.commands import main

from .conftest import REPO, shared_path


def test_bd_rate_pair_and_table(capsys):
    kodak = shared_path("anchors", "kodak")
    assert main(["bd-rate", str(kodak / "jpeg.json"), str(kodak / "vtm.json"), "--metric", "psnr"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("psnr: BD-rate -") and "pchip" in line
    assert main(["bd-rate", str(kodak / "vtm.json"), "--against", str(kodak / "jpeg.json"), str(kodak / "webp.json"),
                 "--metric", "psnr", "--metric", "ms-ssim", "--method", "akima"]) == 0
    table = capsys.readouterr().out
    assert "| JPEG |" in table and "| WebP |" in table and "akima" in table


def test_bd_rate_bad_input_is_one_line(tmp_path, capsys):
    assert main(["bd-rate", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--metric", "psnr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a.json: no such results file" in err


def test_plot(tmp_path, capsys):
    kodak = shared_path("anchors", "kodak")
    assert main(["plot", str(kodak / "jpeg.json"), str(kodak / "vtm.json"), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "rd-psnr.png").stat().st_size > 1000 and (tmp_path / "rd-ms-ssim.png").is_file()
    (tmp_path / "file").write_text("")
    capsys.readouterr()
    assert main(["plot", str(kodak / "jpeg.json"), "-o", str(tmp_path / "file" / "sub")]) == 2
    assert capsys.readouterr().err.startswith("resulic: error:")


def test_evaluate_command_and_job(tmp_path, capsys):
    args = ["--set", "max_images=1", "--set", "max_side=96", "--set", "metrics.names=[psnr, ms-ssim]"]
    assert main(["evaluate", "--workers", "0", "-o", str(tmp_path / "cli"), *args]) == 0
    assert "psnr-rgb" in capsys.readouterr().out
    data = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert data["results"]["ms-ssim-rgb"] == [None]  # 96 px is too small for 5-scale MS-SSIM: null, not NaN

    from jobs.evaluate import main as job

    cfg = str(REPO / "configs" / "evaluate.yaml")
    assert job(["--config", cfg, "--set", "num_workers=0", "--set", f"output_dir={tmp_path / 'job'}", *args]) == 0
    assert (tmp_path / "job" / "results.json").is_file()
    assert job(["--config", cfg, "--set", "metrics.nmes=[psnr]"]) == 2
    assert "metrics.nmes: unknown key" in capsys.readouterr().err


def test_baselines_command(tmp_path, photo, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    photo.crop((0, 0, 64, 64)).save(folder / "a.png")
    assert main(["baselines", str(folder), "--codec", "jpeg", "--bpp", "2", "-o", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "jpeg.json").read_text())
    assert data["results"]["bpp"][0] <= 2 and data["per_image"][0]["image"] == "a"
