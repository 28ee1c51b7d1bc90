"""The endpoint's request-independent parts (resulic.serving) and the Serve config files; no Ray."""

import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from resulic.codec.store import save_codec
from resulic.errors import ConfigError
from resulic.images import png_bytes
from resulic.serving.catalog import Catalog, ServeAppConfig, rate_points_config
from resulic.serving.limits import RequestError, ServeLimits, check_image_header, fingerprint_of
from resulic.serving.handling import (
    compress_reply, decompress_reply, parse_compress_options, refuse_bitstream, split_multipart,
)

REPO = Path(__file__).resolve().parents[1]
LIMITS = ServeLimits(max_pixels=10_000, max_pfo_iterations=5)


def test_options_are_parsed_and_bounded():
    opts = parse_compress_options({"rate_point": "r1", "text": "a dog", "srr": "on", "pfo_iterations": "3"}, LIMITS)
    assert (opts.rate_point, opts.srr, opts.pfo, opts.pfo_iterations) == ("r1", True, True, 3)
    assert parse_compress_options({}, LIMITS).rate_point is None
    opts = parse_compress_options({"bpp": "0.05", "one_pass": "true"}, LIMITS)
    assert (opts.bpp, opts.level, opts.one_pass) == (0.05, None, True)
    assert parse_compress_options({"level": "127"}, LIMITS).level == 127
    for fields, words in [({"srr": "maybe"}, "true or false"), ({"pfo_iterations": "9", "srr": "1", "text": "x"}, "0..5"),
                          ({"pfo_iterations": "1"}, "srr"), ({"srr": "true"}, "caption"), ({"size": "1"}, "unknown option"),
                          ({"pfo_seconds": "nan", "srr": "1", "text": "x", "pfo_iterations": "1"}, "pfo_seconds"),
                          ({"bpp": "0"}, "positive"), ({"bpp": "-1"}, "positive"), ({"bpp": "inf"}, "positive"),
                          ({"bpp": "a lot"}, "expected a number"), ({"level": "128"}, "0..127"),
                          ({"level": "1.5"}, "integer"), ({"bpp": "0.1", "level": "3"}, "give one"),
                          ({"one_pass": "fast"}, "true or false")]:
        with pytest.raises(RequestError, match=words):
            parse_compress_options(fields, LIMITS)


def test_image_header_guard_reads_no_pixels():
    assert check_image_header(png_bytes(Image.new("RGB", (100, 50))), LIMITS) == (100, 50)
    with pytest.raises(RequestError, match="exceeds") as big:
        check_image_header(png_bytes(Image.new("RGB", (200, 100))), LIMITS)
    assert big.value.status == 413
    with pytest.raises(RequestError) as not_image:
        check_image_header(b"plain text", LIMITS)
    assert not_image.value.status == 415


def test_multipart_split():
    body = (b'--b\r\nContent-Disposition: form-data; name="srr"\r\n\r\ntrue\r\n'
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x00\x01\xff\r\n--b--\r\n')
    data, fields = split_multipart(body, "multipart/form-data; boundary=b", "image")
    assert data == b"\x00\x01\xff" and fields == {"srr": "true"}
    with pytest.raises(RequestError, match="no 'bitstream' part"):
        split_multipart(body, "multipart/form-data; boundary=b", "bitstream")


def _form(*parts: tuple[str, bytes], end: bool = True) -> bytes:
    body = b"".join(b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (n.encode(), v) for n, v in parts)
    return body + (b"--b--\r\n" if end else b"")


@pytest.mark.parametrize("body,status,message", [
    # issue 25: 10,000 fields (559 KB) held the ingress's event loop for 11 s
    (_form(*[(f"f{i}", b"v") for i in range(10_000)], ("image", b"x")), 413, "more than 16 parts"),
    (_form(("text", b"x" * 20_000), ("image", b"x")), 413, "field 'text' is over the limit of 16,384 bytes"),
    (_form(("srr", b"true"), ("srr", b"false"), ("image", b"x")), 400, "field 'srr' is repeated"),
    (_form(("image", b"x"), ("image", b"y")), 400, "more than one 'image' part"),
    (_form(("image", b"x"), end=False), 400, "ends before its closing boundary"),
    (b"--other\r\n", 400, "malformed multipart/form-data body"),
    (b"", 400, "malformed multipart/form-data body"),
])
def test_multipart_limits_and_malformed_bodies(body, status, message):
    with pytest.raises(RequestError) as refused:
        split_multipart(body, "multipart/form-data; boundary=b", "image")
    assert refused.value.status == status and message in str(refused.value), str(refused.value)


def test_multipart_needs_a_boundary():
    with pytest.raises(RequestError, match="no boundary"):
        split_multipart(_form(("image", b"x")), "multipart/form-data", "image")


def test_a_large_upload_part_is_not_limited_by_the_field_limit():
    data = bytes(range(256)) * 40_000  # 10 MB, every byte value, CRLFs and dashes included
    got, fields = split_multipart(_form(("level", b"3"), ("image", data)), "multipart/form-data; boundary=b", "image")
    assert got == data and fields == {"level": "3"}


def test_catalog_from_folders(codec, photo, tmp_path):
    folder = save_codec(codec, tmp_path / "r300")
    catalog = Catalog(rate_points_config({"rate_points": {"r300": str(folder)}}))
    rp = catalog.rate_point(None)
    assert (rp.name, rp.version, rp.fingerprint) == ("r300", "local", codec.fingerprint.hex())
    copy = Catalog.from_snapshot(catalog.as_dict())
    assert copy.for_fingerprint(codec.fingerprint.hex()) == rp and copy.allows(str(folder))
    assert not copy.allows("/etc") and not copy.allows("models:/other/1")
    with pytest.raises(RequestError, match="unknown rate point") as unknown:
        copy.rate_point("nope")
    assert unknown.value.status == 404
    with pytest.raises(RequestError, match="does not serve"):
        copy.for_fingerprint("00000000")
    reply = compress_reply(codec, rp, png_bytes(photo), parse_compress_options({}, ServeLimits()), ServeLimits())
    assert reply.body == codec.encode(photo).data and float(reply.headers["X-Resulic-Bpp"]) > 0
    decoded = decompress_reply(codec, rp, reply.body)
    assert decoded.body[:4] == b"\x89PNG" and decompress_reply(codec, rp, reply.body[:-3]).status == 400
    assert refuse_bitstream(codec, reply.body, ServeLimits()) is None


def test_decode_limits_are_checked_from_the_header(codec, photo):
    """The ingress refuses from the header alone (413 size, 422 settings); a replica checks the
    rate point's own settings before queueing the decode; each message names the service's limit."""
    from resulic.codec import Container, Header, pack

    big = pack(Container(Header(codec.fingerprint, 2048, 2048), b"", b"\x00" * 8))
    with pytest.raises(RequestError, match=r"over the limit of 1,048,576; .*limits\.max_decode_pixels") as refused:
        fingerprint_of(big, ServeLimits())
    assert refused.value.status == 413
    assert fingerprint_of(big) == codec.fingerprint.hex()  # without limits: only the header's syntax
    loud = pack(Container(Header(codec.fingerprint, 64, 64, guidance=50.0), b"", b"\x00" * 8))
    with pytest.raises(RequestError, match="limits.max_guidance") as refused:
        fingerprint_of(loud, ServeLimits())
    assert refused.value.status == 422
    S = codec.config.rate_point.sampling_steps
    slow = pack(Container(Header(codec.fingerprint, 64, 64, steps=4 * S + 1), b"", b"\x00" * 8))
    assert fingerprint_of(slow, ServeLimits()) == codec.fingerprint.hex()  # the default depends on the model
    reply = refuse_bitstream(codec, slow, ServeLimits())
    assert reply.status == 422 and "limits.max_steps" in reply.error
    assert refuse_bitstream(codec, slow, ServeLimits(max_steps=4 * S + 1)) is None
    assert decompress_reply(codec, None, big, ServeLimits(max_decode_pixels=2048 * 2048 - 1)).status == 413  # refused: no rate point needed


def test_the_ingress_checks_a_header_against_the_models_settings(codec):
    """Issue 25: under load a bad file waited 40-90 s behind running decodes for its 4xx, because
    only the replica knew the model's S. The replica now reports each loaded model's settings and
    the ingress refuses the same files, before queueing."""
    from resulic.codec import Container, Header, pack
    from resulic.serving.limits import bitstream_header, check_header_settings, model_settings

    settings = model_settings(codec)
    S = codec.config.rate_point.sampling_steps
    for header, status, words in [
        (Header(codec.fingerprint, 64, 64, steps=4 * S + 1), 422, "limits.max_steps"),
        (Header(codec.fingerprint, 64, 64, steps=999), 422, "limits.max_steps"),
        (Header(codec.fingerprint, 64, 64, level=3), 400, "has a fixed rate"),
    ]:
        data = pack(Container(header, b"", b"\x00" * 8))
        replica = refuse_bitstream(codec, data, ServeLimits())
        with pytest.raises(RequestError) as refused:
            check_header_settings(bitstream_header(data, ServeLimits()), settings, ServeLimits())
        assert (refused.value.status, str(refused.value)) == (replica.status, replica.error) and words in replica.error
    big_s = pack(Container(Header(codec.fingerprint, 64, 64, steps=999), b"", b"\x00" * 8))
    ok = pack(Container(Header(codec.fingerprint, 64, 64), b"", b"\x00" * 8))
    check_header_settings(bitstream_header(ok), settings, ServeLimits())  # the model's own settings pass
    check_header_settings(bitstream_header(big_s), None, ServeLimits())  # unknown model: the replica checks


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="default_rate_point"):
        rate_points_config({"rate_points": {"a": "x"}, "default_rate_point": "b"})
    with pytest.raises(ConfigError, match="rate point names"):
        rate_points_config({"rate_points": {"bad name": "x"}})


@pytest.mark.parametrize("name", ["config.local.yaml", "config.cluster.yaml"])
def test_serve_config_files_validate(name):
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((REPO / "serve" / name).read_text())
    ServeDeploySchema.model_validate(data)
    assert data["http_options"]["host"] == "127.0.0.1"
    app = data["applications"][0]
    assert app["import_path"] == "serve.app:build"
    ServeAppConfig.model_validate(app["args"])
    codec = next(d for d in app["deployments"] if d["name"] == "CodecDeployment")
    assert codec["autoscaling_config"]["target_ongoing_requests"] == 1 and codec["max_ongoing_requests"] <= 2
    if name == "config.local.yaml":  # `serve run` on a 2-core machine: max_replicas must fit in 2 CPUs
        ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
        need = ingress["ray_actor_options"]["num_cpus"] + codec["autoscaling_config"]["max_replicas"] * codec[
            "ray_actor_options"]["num_cpus"]
        assert need <= 2, f"ingress + max_replicas codec replicas need {need} CPUs"


def test_replica_cache_folders_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from resulic.serving.catalog import replica_cache_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"resulic-serve-{int(dead.stdout)}"
    (stale / "models").mkdir(parents=True)
    live = tmp_path / "resulic-serve-1"  # pid 1 is alive
    live.mkdir()
    other = tmp_path / "resulic-serve-notes"
    other.mkdir()
    mine = replica_cache_dir(tmp_path)
    assert mine.name == f"resulic-serve-{os.getpid()}" and mine.is_dir()
    assert not stale.exists() and live.exists() and other.exists()


def test_the_catalog_forgets_whole_versions_and_its_snapshot_decodes_what_it_does():
    """After more swaps than the catalog remembers, the oldest versions are forgotten whole (their
    files made through earlier priors too), never one served now, and the ingress's snapshot
    decodes exactly the fingerprints the replica's catalog decodes."""
    from resulic.serving.catalog import HISTORY, RatePoint

    config = rate_points_config({"rate_points": {"r": "/models/r"}})
    catalog = Catalog(config, resolve=False)
    versions = [RatePoint("r", "/models/r", f"models:/m/{v}", str(v), f"{v:06x}00", (f"{v:06x}0a", f"{v:06x}0b"))
                for v in range(1, HISTORY)]  # 3 fingerprints each: more than HISTORY after 11 swaps
    for rp in versions:
        catalog.apply(config, {"r": rp})
        live = set(catalog._by_fingerprint)
        copy = Catalog.from_snapshot(catalog.as_dict())
        assert set(copy._by_fingerprint) == live and len(live) <= HISTORY
        assert all(catalog.for_fingerprint(fp) == rp for fp in rp.fingerprints())
        kept = {version for version in versions if version.fingerprint in live}
        assert all(catalog.for_fingerprint(fp) == version for version in kept for fp in version.fingerprints())
    assert versions[0].fingerprint not in live and versions[0].earlier[1] not in live
    big = RatePoint("r", "/models/r", "models:/m/99", "99", "ffffffff", tuple(f"e{i:07x}" for i in range(HISTORY + 4)))
    catalog.apply(config, {"r": big})  # a served version is never forgotten, however many files it decodes
    assert all(catalog.for_fingerprint(fp) == big for fp in big.fingerprints())
