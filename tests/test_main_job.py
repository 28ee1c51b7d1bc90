"""The README's main command, on the embedded defaults, shortened to one sample photo."""

import json

from jobs.main import main


def test_main_job_round_trips_sample_photos(tmp_path, capsys, ray_cluster):
    rc = main(["--config", "configs/main.yaml", "--set", "max_images=1", "--set", "max_side=160", "--set", "sweep=null", "--set", "train.stage1=null", "--set", "train.stage2=null",
               "--set", f"output_dir={tmp_path}"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "PSNR" in out and "astronaut" in out
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows[0]["file_bytes"] == (tmp_path / "astronaut.rslc").stat().st_size
    assert (tmp_path / "astronaut.png").exists()
    # the last step served the model on 127.0.0.1 and wrote the same file over HTTP
    assert (tmp_path / "served" / "astronaut.rslc").read_bytes() == (tmp_path / "astronaut.rslc").read_bytes()
    assert "same bytes as local" in out and "  true\n" in out


def test_main_job_reports_config_errors(capsys):
    assert main(["--config", "configs/main.yaml", "--set", "max_imgs=1"]) == 2
    assert "max_imgs: unknown key" in capsys.readouterr().err


def test_main_job_reports_a_missing_image_folder(tmp_path, capsys):
    assert main(["--config", "configs/main.yaml", "--set", f"images={tmp_path}/none"]) == 2
    assert "no such image folder" in capsys.readouterr().err
