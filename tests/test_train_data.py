"""Training data and config checks: everything a user gets wrong fails before training, naming
the file or key. No Ray needed."""

import json

import numpy as np
import pytest
from PIL import Image

from resulic.config import build_config
from resulic.data.dataset import (
    CropAndDrop,
    check_images,
    dataset_hash,
    read_manifest,
    resolve_records,
    split_validation,
)
from resulic.errors import ConfigError, ImageError
from resulic.train.config import TrainConfig


def _image(path, size=(160, 140)):
    Image.new("RGB", size, (120, 30, 200)).save(path)
    return path


def test_manifest_paths_are_relative_to_the_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    _image(tmp_path / "img" / "a.png")
    manifest = tmp_path / "train.jsonl"
    manifest.write_text('{"path": "img/a.png", "caption": "a purple square"}\n\n{"path": "s3://bucket/b.png"}\n')
    records = read_manifest(manifest)
    assert records[0].path == str(tmp_path / "img" / "a.png") and records[0].caption == "a purple square"
    assert records[1].path == "s3://bucket/b.png" and records[1].is_remote and records[1].caption == ""


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "train.jsonl:2: not valid JSON"),
        ('["a.png"]', 'train.jsonl:2: expected an object with a "path" string'),
        ('{"path": "a.png", "caption": 3}', 'train.jsonl:2: "caption" must be a string'),
    ],
)
def test_malformed_manifest_names_file_and_line(tmp_path, line, message):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text('{"path": "a.png"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        read_manifest(manifest)


def test_missing_and_too_small_images_are_named(tmp_path):
    _image(tmp_path / "small.png", (100, 300))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "gone.png"}) + "\n" + json.dumps({"path": "small.png"}) + "\n")
    records = read_manifest(manifest)
    with pytest.raises(ImageError, match="gone.png: listed in the training data but not found"):
        check_images(records, 128)
    with pytest.raises(ImageError, match=r"small.png: 100x300 is smaller than the 128-px crop \(data.crop_size\)"):
        check_images(records[1:], 128)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="text.png: not a readable image"):
        check_images(read_manifest_line(tmp_path, "text.png"), 128)


def read_manifest_line(folder, name):
    path = folder / f"{name}.jsonl"
    path.write_text(json.dumps({"path": name}) + "\n")
    return read_manifest(path)


def test_validation_split_is_fixed_by_name_and_leaves_training_images(tmp_path):
    for name in "abcde":
        _image(tmp_path / f"{name}.png")
    records = resolve_records(str(tmp_path), tmp_path / "cache")
    train, held = split_validation(records, 2)
    assert len(train) == 3 and len(held) == 2 and not set(train) & set(held)
    # adding an image does not reshuffle which old images are held out unless it ranks first
    _image(tmp_path / "f.png")
    _, held_again = split_validation(resolve_records(str(tmp_path), tmp_path / "cache"), 2)
    assert len(set(held) & set(held_again)) >= 1
    with pytest.raises(ConfigError, match="data.validation_images"):
        split_validation(records, 5)
    assert dataset_hash(records) != dataset_hash(records[:-1])


def test_sample_source_writes_real_photos_once(tmp_path):
    records = resolve_records("samples", tmp_path)
    assert len(records) == 4
    before = [(tmp_path / "samples" / f"{r.name}").stat().st_mtime_ns for r in records]
    resolve_records("samples", tmp_path)
    assert before == [(tmp_path / "samples" / f"{r.name}").stat().st_mtime_ns for r in records]


def test_crop_and_caption_dropout(tmp_path):
    path = _image(tmp_path / "a.png", (300, 200))
    always = CropAndDrop(128, caption_dropout=1.0)
    never = CropAndDrop(128, caption_dropout=0.0)
    row = {"path": str(path), "caption": "a boat"}
    out = always(row)
    assert out["image"].shape == (128, 128, 3) and out["image"].dtype == np.uint8 and out["caption"] == ""
    assert never(row)["caption"] == "a boat"


def test_train_config_rules_name_the_key():
    with pytest.raises(ConfigError, match="init_from: stage 2 starts from a stage-1 model"):
        build_config(TrainConfig, {"stage": 2})
    with pytest.raises(ConfigError, match="data.crop_size: .*not a multiple of 128"):
        build_config(TrainConfig, {"data": {"crop_size": 200}})
    with pytest.raises(ConfigError, match="optim.stpes: unknown key"):
        build_config(TrainConfig, {"optim": {"stpes": 3}})
    with pytest.raises(ConfigError, match="run.name: .*names a folder"):
        build_config(TrainConfig, {"run": {"name": "../up"}})
    with pytest.raises(ConfigError, match="no-such.yaml: config file not found"):
        build_config(TrainConfig, {"model": "no-such.yaml"})


def test_science_hash_ignores_operational_keys():
    a = build_config(TrainConfig, {})
    b = build_config(TrainConfig, {}, ["optim.steps=99", "workers.num_workers=1", "run.checkpoint_every=3"])
    c = build_config(TrainConfig, {}, ["optim.lr=0.001"])
    assert a.science_hash() == b.science_hash() != c.science_hash()


def test_a_new_key_at_its_default_leaves_the_science_hash_and_old_runs_resumable():
    from pydantic import Field

    from resulic.train.trainer import same_science

    class NextRelease(TrainConfig):  # a release that adds a switch, off by default
        new_switch: bool = Field(False)

    settings = {"optim": {"lr": 0.002}, "loss": {"lambda_pixel": 3.0}}
    today, later = TrainConfig.model_validate(settings), NextRelease.model_validate(settings)
    assert later.science_hash() == today.science_hash()
    assert NextRelease.model_validate({**settings, "new_switch": True}).science_hash() != today.science_hash()
    # a run started before this rule carries the every-key hash: it still resumes; another config does not
    assert same_science(today.science_hash(every_key=True), today)
    assert not same_science(TrainConfig.model_validate({}).science_hash(every_key=True), today)


def test_hold_out_is_by_photo_not_by_file(tmp_path):
    """Every scale (or mirrored copy) of a held-out photo leaves the training set with it."""
    lines = []
    for photo in "abcdef":
        for scale in ("1", "0.5", "0.25"):
            _image(tmp_path / f"{photo}@{scale}.png")
            lines.append(json.dumps({"path": f"{photo}@{scale}.png", "group": f"photo-{photo}"}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    train, held = split_validation(read_manifest(manifest), 2)
    held_groups = {r.group for r in held}
    assert len(held) == 2 and len(held_groups) == 2
    assert all(r.name.endswith("@1.png") for r in held)  # the first (largest) record of each photo
    assert not held_groups & {r.group for r in train} and len(train) == 12
    # an older manifest without "group": the original pixels' sha256 ties a mirrored copy to its photo
    manifest.write_text("".join(json.dumps({"path": f"{p}@1.png", "sha256": f"hash-{p}"}) + "\n"
                                + json.dumps({"path": f"{p}@0.5.png", "sha256": f"hash-{p}"}) + "\n" for p in "abc"))
    train, held = split_validation(read_manifest(manifest), 1)
    assert len(train) == 4 and held[0].photo not in {r.photo for r in train}


def test_crops_with_a_cached_latent_are_never_mirrored_and_others_are(tmp_path):
    # TAEF2's latent of a mirrored photo is not its mirrored latent (CropAndDrop's docstring):
    # a crop with a cached latent stays as it is; a pixel-only crop is mirrored half the time.
    from safetensors.numpy import save_file

    pixels = np.random.default_rng(0).integers(0, 255, (128, 256, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    # a latent whose cells name their pixel block: each crop's pixels must be that block's
    latent = np.ascontiguousarray(np.broadcast_to(np.arange(32, dtype=np.float32), (4, 16, 32)))
    save_file({"latent": latent}, str(tmp_path / "a.safetensors"))
    row = {"path": str(tmp_path / "a.png"), "latent": str(tmp_path / "a.safetensors"), "caption": ""}
    flips = CropAndDrop(128, caption_dropout=0.0, hflip=True)
    for _ in range(20):
        out = flips(row)
        cells = out["latent"][0, 0]
        left = int(cells[0]) * 8
        assert cells[0] < cells[-1] and np.array_equal(out["image"], pixels[:, left : left + 128])
    Image.fromarray(pixels).save(tmp_path / "b.png")  # another path: CropAndDrop caches by path
    pixel_only = {"path": str(tmp_path / "b.png"), "caption": ""}
    seen = set()
    for _ in range(40):
        image = flips(pixel_only)["image"]
        windows = [pixels[:, x : x + 128] for x in range(0, 129)]
        seen.add(not any(np.array_equal(image, w) for w in windows))
    assert seen == {True, False}


def test_scales_of_a_photo(tmp_path):
    from resulic.data.photos import scale_sizes

    # a 5312x2988 wallpaper: the full scale capped at 2048 (0.386), 1/2 is then too close to it, 1/4 kept
    assert scale_sizes((5312, 2988), (1, 0.5, 0.25), 2048, 256) == [(0.3855, (2048, 1152)), (0.25, (1328, 744))]
    # a 2560x1600 one: three scales; min_side drops what falls below 256 px
    assert [s for s, _ in scale_sizes((2560, 1600), (1, 0.5, 0.25, 0.125), 4096, 256)] == [1, 0.5, 0.25]
    # an over-compressed JPEG: its full scale is never written
    assert [s for s, _ in scale_sizes((2560, 1920), (1, 0.5, 0.25), 4096, 256, max_scale=0.5)] == [0.5, 0.25]
    assert all(w % 8 == 0 and h % 8 == 0 for _, (w, h) in scale_sizes((999, 777), (1, 0.5), 4096, 64))


def test_worker_batches_crop_their_share_like_the_pipeline(tmp_path):
    """data.loader 'worker': each worker crops every world-th row itself, in batches shaped as
    Ray Data's iter_batches gives them; two workers see disjoint rows."""
    from resulic.data.dataset import epoch_items, worker_batches

    for name, size in (("a", (512, 256)), ("b", (256, 256))):
        _image(tmp_path / f"{name}.png", size)
    records = resolve_records(str(tmp_path), tmp_path / "cache")
    items = epoch_items(records, 128)
    # area-weighted: the 512x256 image gives 2 rows a pass for every 1 of the 256x256 one
    assert sum("a.png" in i["path"] for i in items) == 2 * sum("b.png" in i["path"] for i in items)
    assert len(items) >= 512
    batch = next(worker_batches(items, 128, 0.0, True, 3, rank=0, world=2, seed=0))
    assert batch["image"].shape == (3, 128, 128, 3) and batch["image"].dtype == np.uint8
    assert list(batch["caption"]) == ["", "", ""]
