"""The ``resulic`` command: compress, decompress and inspect ResULIC files.

Errors meant for the user (bad files, bad configs, missing models) print one line and exit with
status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ResulicError
from .common import SUFFIX, file_pairs, tracking_uri_option

DESCRIPTION = """\
ResULIC: ultra-low-bitrate image compression with a compression-aware diffusion decoder.

Without --model, the shipped trained codec is used: the 'small' profile (TAEF2 autoencoder,
a diffusion prior and compressors trained by this platform), with a choice of rate points
(--rate). Decompression finds the rate point from the file. --model tiny is the untrained test
profile; --model also takes a trained-codec folder, models:/<name>@<alias> or a model YAML.
"""

EPILOG = """\
examples:
  resulic compress photo.png -o photo.rslc
  resulic compress photo.png -o photo-r3.rslc --rate r3     # a lower or higher shipped rate point
  resulic compress photo.png -o photo-015.rslc --bpp 0.15   # per-image rate control (one model, any rate)
  resulic decompress photo.rslc -o photo-decoded.png
  resulic decompress photo-r3.rslc -o photo-r3-fast.png --one-pass   # one network evaluation instead of S - 1
  resulic info photo.rslc
  resulic info --rates                           # the shipped rate points and the variable model's levels
  resulic compress photos/ -o compressed/        # every image in a folder, with a progress bar
  resulic compress photo.png -o photo-r1.rslc --model platform/resulic/weights/small-codecs/r1 --steps 4   # a codec folder
  resulic compress photo.png --text "a red barn by a pond" --srr     # send the semantic residual
  resulic compress examples/photos/ -o examples-text/ --captions examples/captions.jsonl --caption   # captions by file name
  resulic compress photo.png -o photo-pfo.rslc --text "a red barn" --srr --pfo --semantics configs/semantics/example.yaml
  resulic evaluate --model platform/resulic/weights/small-codecs/r1 --model platform/resulic/weights/small-codecs/r2 \\
      --images samples --set 'metrics.names=[psnr,ms-ssim,st-lpips]'     # -> outputs/evaluate/
  resulic evaluate --model models:/resulic@champion --images samples --random-backbones --set 'metrics.names=[psnr,lpips]'
  resulic baselines samples --bpp 0.02 0.05 0.1 0.2 -o outputs/baselines
  resulic bd-rate outputs/baselines/vvc.json outputs/evaluate/results.json --metric psnr --metric ms-ssim
  resulic plot outputs/evaluate/results.json outputs/baselines/*.json -o plots/
  resulic remote compress photo.png --url http://127.0.0.1:8000 --rate-point default
"""


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="MODEL", help="trained-codec folder, models:/<name>@<alias> from the MLflow registry, model YAML, or 'tiny' "
                   "(default: $RESULIC_MODEL, else the shipped small-profile codec)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a model-YAML key, e.g. --set rate_point.sampling_steps=4 (repeatable)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    tracking_uri_option(p)


# DecodeLimits().max_pixels, written out so that --help needs no torch (tests/test_cli.py checks).
COMPRESS_MAX_PIXELS = 16_000_000


def _decode_limit_options(p: argparse.ArgumentParser) -> None:
    # Defaults are DecodeLimits()'s (importing it here would load torch for --help).
    g = p.add_argument_group("decode limits", "a file that asks for more is refused from its header, before any work")
    g.add_argument("--max-pixels", type=int, help="the most pixels of the image padded to 128 px (default: 16,000,000)")
    g.add_argument("--max-steps", type=int, help="the most diffusion steps a file may ask for (default: 4 x the model's S)")
    g.add_argument("--max-guidance", type=float, help="the largest guidance scale a file may ask for (default: 20)")
    g.add_argument("--max-text-tokens", type=int, help="the most text tokens a file may hold (default: 75)")


# What decompress and info read of one file. A real file is bytes to kilobytes (the largest image
# the default limits admit, at a high 1 bpp, is 2 MB); a 50 MB text section took 42-55 s to refuse.
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024


def _file_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES, metavar="N",
                   help=f"refuse larger {SUFFIX} files before reading them (default: {DEFAULT_MAX_FILE_BYTES:,})")


def _decode_limits(args):
    from ..codec.limits import DecodeLimits

    names = ("max_pixels", "max_steps", "max_guidance", "max_text_tokens")
    try:
        return DecodeLimits(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})
    except ValueError as exc:
        raise ResulicError(f"decode limits: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resulic", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the libraries' INFO logs too (Ray, MLflow, diffusers...); default: warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("compress", help="image(s) -> .rslc file(s)", description="Compress an image or a folder of images.")
    c.add_argument("input", help="an image file or a folder of images")
    c.add_argument("-o", "--output", help=f"output file or folder (default: input with {SUFFIX} / a sibling folder)")
    _model_options(c)
    c.add_argument("--rate", metavar="NAME", help="rate point of the shipped codec, e.g. r1 (lowest) .. r4, or variable "
                   "(without --model; 'resulic info --rates' lists them)")
    r = c.add_mutually_exclusive_group()
    r.add_argument("--bpp", type=float, metavar="BPP",
                   help="per-image rate control: the file closest to BPP bits per pixel, at most 5%% over it "
                        "(a variable-rate model: without --model, the shipped 'variable' point)")
    r.add_argument("--level", type=int, metavar="0..127",
                   help="rate level of a variable-rate model (0 = its lowest rate, 127 = its highest)")
    c.add_argument("--one-pass", action="store_true",
                   help="the file asks for a one-pass decode (one network evaluation: S=2, no guidance)")
    c.add_argument("--steps", type=int, help="DDIM steps S for the decoder (default: the model's rate point)")
    c.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    c.add_argument("--seed", type=int, help="seed of the decoder's starting noise (default: the model's)")
    c.add_argument("--text", default="", help="the original image's caption: sent whole, or the source of --srr's residual")
    c.add_argument("--caption", action="store_true",
                   help="send the original's caption from the caption source (--captions file or semantics.captioner)")
    c.add_argument("--srr", action="store_true",
                   help="send the semantic residual: the caption minus what the decoder's starting point already shows")
    c.add_argument("--pfo", action="store_true", help="refine the residual by prompt fidelity optimisation (with --srr)")
    c.add_argument("--captions", metavar="JSONL", help="captions of the originals by file name ({image, caption} per line)")
    c.add_argument("--semantics", metavar="YAML", help="semantics config: captioner, residual extractor, Pfo (see docs/semantics.md)")
    c.add_argument("--semantics-set", dest="semantics_overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a semantics key, e.g. --semantics-set pfo.iterations=50 (repeatable)")
    c.add_argument("--max-pixels", type=int, default=COMPRESS_MAX_PIXELS,
                   help="refuse images with more pixels, padded to 128 px, than this (default: "
                        f"{COMPRESS_MAX_PIXELS:,}, what decoders accept by default, so every file "
                        "written can be read back without raising their limit)")

    d = sub.add_parser("decompress", help=".rslc file(s) -> PNG", description="Decompress a file or a folder of .rslc files.")
    d.add_argument("input", help=f"a {SUFFIX} file or a folder of them")
    d.add_argument("-o", "--output", help="output image or folder (default: input with .png / a sibling folder)")
    d.add_argument("--one-pass", action="store_true",
                   help="decode with one network evaluation (S=2, no guidance) whatever the file asks: faster, "
                        "at some cost in quality (docs/benchmarks.md)")
    d.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing output images; without it, only images an earlier decompress wrote "
                        "are replaced (never, say, the photo the file was made from)")
    _model_options(d)
    _decode_limit_options(d)
    _file_size_option(d)

    i = sub.add_parser("info", help="print a file's header as JSON (no model needed); --rates: the shipped rate points",
                       description="Print the header of a file as JSON, or one JSON line per file of a folder; "
                                   "with --rates, the shipped codec's rate points instead.")
    i.add_argument("input", nargs="?", help=f"a {SUFFIX} file or a folder of them")
    i.add_argument("--rates", action="store_true",
                   help="list the shipped rate points (for compress --rate) and the variable-rate model's levels "
                        "(for --level; --bpp picks one per image)")
    _file_size_option(i)

    from . import evaluation_commands, platform_commands

    evaluation_commands.add_parsers(sub)  # evaluate, baselines, bd-rate, plot
    platform_commands.add_parsers(sub)  # train, sweep, promote, ui
    from .client import add_parser as add_remote_parser

    add_remote_parser(sub)  # remote compress|decompress --url
    return parser


def _check_outputs(pairs) -> None:
    """Refuse, before any model loads or any encode runs, outputs that cannot be written: an
    existing folder in a file's place, a parent that is a file, a folder we cannot create files
    in (probed by creating one: permissions, read-only mounts and quotas all show up)."""
    import tempfile

    probed: dict[Path, str | None] = {}
    for _, dst in pairs:
        if dst.is_dir():
            raise ResulicError(f"cannot write {dst}: it is a folder")
        if dst.exists() and not dst.is_file():
            raise ResulicError(f"cannot write {dst}: it is not a regular file")
        parent = dst.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent  # the folder that write_atomic's mkdir would create it in
        if parent not in probed:
            problem = None
            if not parent.is_dir():
                problem = f"{parent} is not a folder"
            else:
                try:
                    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".resulic-probe-")
                    os.close(fd)
                    os.unlink(tmp)
                except OSError as exc:
                    problem = f"cannot create files in {parent} ({exc.strerror or exc})"
            probed[parent] = problem
        if probed[parent]:
            raise ResulicError(f"cannot write {dst}: {probed[parent]}")


def _run_many(pairs, is_folder: bool, action: Callable[[Path, Path], str], verb: str) -> int:
    from tqdm import tqdm

    failures = 0
    bar = tqdm(pairs, desc=verb, unit="img", disable=not is_folder, file=sys.stderr)
    for src, dst in bar:
        try:
            line = action(src, dst)
        except ResulicError as exc:
            failures += 1
            message = str(exc) if str(src) in str(exc) else f"{src}: {exc}"  # name the file once
            tqdm.write(f"resulic: error: {message}", file=sys.stderr)
            continue
        except OSError as exc:  # an unwritable or clashing output path
            failures += 1
            tqdm.write(f"resulic: error: cannot write {dst}: {exc.strerror or exc}", file=sys.stderr)
            continue
        tqdm.write(line) if is_folder else print(line)
    if failures and is_folder:
        print(f"resulic: {failures} of {len(pairs)} file(s) failed", file=sys.stderr)
    return 2 if failures else 0


def _check_header_options(args) -> None:
    """Refuse, before any model loads, a --seed/--steps/--guidance the file's header cannot hold
    (the container's FIELD_RANGES: the reader's ranges, so no file is written that no decoder
    reads). The model's own bounds (steps <= N_r) are checked once it is loaded."""
    from ..codec.container import FIELD_RANGES, check_field

    for name in ("seed", "steps", "guidance"):
        value = getattr(args, name)
        if value is None:
            continue
        try:
            check_field(name, value)
        except ValueError:
            low, high = FIELD_RANGES[name]
            raise ResulicError(f"--{name} {value}: must be in {low}..{high}") from None


def cmd_compress(args) -> int:
    from ..images import IMAGE_SUFFIXES, open_image, padded_size, write_atomic

    if args.pfo and not args.srr:
        raise ResulicError("--pfo refines the semantic residual: add --srr")
    import math

    if args.bpp is not None and not (math.isfinite(args.bpp) and args.bpp > 0):
        raise ResulicError(f"--bpp {args.bpp:g}: must be a positive number of bits per pixel, e.g. 0.05")
    if args.level is not None and not 0 <= args.level <= 127:
        raise ResulicError(f"--level {args.level}: must be in 0..127")
    _check_header_options(args)
    if (args.bpp is not None or args.level is not None) and args.rate is not None:
        raise ResulicError("--rate picks a fixed-rate shipped point; --bpp and --level set the variable-rate "
                           "model's rate: use one or the other")
    # The inputs are checked before anything heavy (torch, diffusers: seconds) is imported.
    pairs, is_folder = file_pairs(Path(args.input), args.output, lambda p: p.suffix.lower() in IMAGE_SUFFIXES, SUFFIX, "_rslc")
    _check_outputs(pairs)

    from ..config import SemanticsConfig, load_config
    from ..services.registry import open_codec
    from ..semantics.pipeline import Semantics

    sem_overrides = list(args.semantics_overrides) + ([f"captions_file={args.captions}"] if args.captions else [])
    try:
        semantics = Semantics(load_config(SemanticsConfig, args.semantics, sem_overrides))
    except ResulicError as exc:
        raise type(exc)(str(exc).replace("(with --set ", "(with --semantics-set ")) from None
    knob = args.bpp is not None or args.level is not None
    if args.one_pass:
        if args.steps is not None or args.guidance is not None:
            raise ResulicError("--one-pass sets the steps and the guidance: drop --steps/--guidance")
        from ..codec.codec import ONE_PASS

        args.steps, args.guidance = ONE_PASS["steps"], ONE_PASS["guidance"]
    # Pfo decodes while it encodes; anything else needs no prior, control module or diffusers.
    codec = open_codec(args.model, args.overrides, device=args.device, rate=args.rate, variable=knob,
                       encode_only=not args.pfo)

    warned: set[str] = set()

    def action(src: Path, dst: Path) -> str:
        import warnings

        img = open_image(src, max_pixels=args.max_pixels)
        ph, pw = padded_size(img.height, img.width, codec.config.stride)  # what a decoder will count
        if ph * pw > args.max_pixels:
            raise ResulicError(f"{src.name}: {img.width}x{img.height} is {ph * pw:,} pixels padded to "
                               f"{codec.config.stride}, over the limit of {args.max_pixels:,} (what decoders "
                               "accept by default; raise it with --max-pixels here and when decompressing)")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                options = dict(text=args.text, caption=args.caption, srr=args.srr, pfo=args.pfo, image_name=src.name,
                               semantics=semantics, steps=args.steps, guidance=args.guidance, seed=args.seed)
                if args.bpp is not None:
                    from ..codec.rate_control import encode_to_bpp

                    r, search = encode_to_bpp(codec, img, args.bpp, **options)
                else:
                    r = codec.encode(img, level=args.level, **options)
        except ValueError as exc:
            raise ResulicError(str(exc)) from None
        for message in dict.fromkeys(str(w.message) for w in caught if w.filename.find("resulic") >= 0):
            if message not in warned:  # library warnings (e.g. no captioner) once, as one line
                warned.add(message)
                print(f"resulic: warning: {message}", file=sys.stderr)
        write_atomic(dst, r.data)
        text = f", text {r.semantics['text_mode']} {r.text_bytes} bytes {r.semantics.get('text', '')!r}" if r.text_mode else ""
        if "pfo" in r.semantics:
            p = r.semantics["pfo"]
            text += (f" (pfo: {p['metric'].split(' ')[0]} {p['initial_score']:.4g} -> {p['best_score']:.4g}, "
                     f"{p['iterations']} it, {p['stopped_by']})")
        point = codec.config.rate_point.name
        if r.level is not None:
            point += f" level {r.level}"
        if args.bpp is not None:  # the search's time, not only the last encode's
            return (f"{src} -> {dst}: {len(r.data)} bytes, {r.bpp:.4f} bpp (target {args.bpp:g} bpp), rate point {point}, "
                    f"found in {search.encodes} encodes{text}, {search.seconds:.1f} s")
        return (f"{src} -> {dst}: {len(r.data)} bytes, {r.bpp:.4f} bpp (estimate {r.estimated_bpp:.4f}), "
                f"rate point {point}{text}, {r.seconds:.1f} s")

    return _run_many(pairs, is_folder, action, "compress")


def cmd_decompress(args) -> int:
    pairs, is_folder = file_pairs(Path(args.input), args.output, lambda p: p.suffix == SUFFIX, ".png", "_decoded")
    _check_outputs(pairs)

    from ..errors import DecodeLimitError
    from ..images import is_decoded_by_us, save_image_atomic

    limits = _decode_limits(args)
    if args.max_file_bytes < 1:
        raise ResulicError("--max-file-bytes must be at least 1")
    if not is_folder:  # one file: its size is refused before any model loads (a folder goes on past it)
        _read_bytes(pairs[0][0], args.max_file_bytes)
    codec_for = _decoder_codecs(args)

    def action(src: Path, dst: Path) -> str:
        if not args.force and dst.exists() and not is_decoded_by_us(dst):
            raise ResulicError(f"{dst} exists and was not written by resulic decompress (the original photo?): "
                               "choose another -o, or pass --force to overwrite it")
        data = _read_bytes(src, args.max_file_bytes)
        try:
            result = codec_for(data).decode(data, limits=limits, one_pass=args.one_pass)
        except DecodeLimitError as exc:
            raise exc.with_hint("--" + exc.limit.replace("_", "-")) from None
        save_image_atomic(result.image, dst, mark=True)
        return f"{src} -> {dst}: {result.image.size[0]}x{result.image.size[1]}, {result.seconds:.2f} s"

    return _run_many(pairs, is_folder, action, "decompress")


def _decoder_codecs(args) -> Callable[[bytes], object]:
    """bytes -> the codec that decodes them: the named model, or else the shipped rate point
    whose fingerprint the file's header carries."""
    import os

    from ..codec.resolve import DEFAULT_MODEL_ENV
    from ..services.registry import open_codec

    if args.model is not None or args.overrides or os.environ.get(DEFAULT_MODEL_ENV):
        codec = open_codec(args.model, args.overrides, device=args.device)
        return lambda data: codec
    from ..codec import shipped
    from ..codec.container import unpack
    from ..errors import ModelMismatchError

    loaded: dict[bytes, object] = {}

    def codec_for(data: bytes):
        fingerprint = unpack(data).header.fingerprint
        if fingerprint not in loaded:
            codec = shipped.load_for_file(data, device=args.device)
            if codec is None:
                raise ModelMismatchError(
                    f"made by model {fingerprint.hex()}, which is none of the shipped rate points "
                    f"({', '.join(shipped.rate_names())}): pass the model that wrote it with --model"
                )
            loaded[fingerprint] = codec
        return loaded[fingerprint]

    return codec_for


def _read_bytes(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The file's bytes, refused unread when over ``max_bytes`` (opened non-blocking: a FIFO in
    a folder of files does not hold the command)."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ResulicError(f"{path}: cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ResulicError(f"{path}: cannot read (not a regular file)")
        if info.st_size > max_bytes:
            raise ResulicError(f"{path}: {info.st_size:,} bytes, over the limit of {max_bytes:,} "
                               "(raise it with --max-file-bytes)")
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise ResulicError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > max_bytes:  # grew while we read it
        raise ResulicError(f"{path}: over the limit of {max_bytes:,} bytes (raise it with --max-file-bytes)")
    return data


def _header_info(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> dict:
    from ..codec.container import unpack

    data = _read_bytes(path, max_bytes)
    c = unpack(data)
    info = {"file": str(path), **c.header.as_dict()}
    info.update(
        file_bytes=len(data),
        bpp=len(data) * 8 / (c.header.width * c.header.height),
        latent_bytes=len(c.latent),
        text_bytes=len(c.text),
        text_tokens=len(_text_tokens(c)),
        header_bytes=len(data) - len(c.latent) - len(c.text),
    )
    return info


def _text_tokens(container) -> list[int]:
    if not container.header.text_mode:
        return []
    from ..semantics.text_coding import decode_ids  # numpy and the text model: only for files with text

    return decode_ids(container.text)


def rates_table() -> str:
    """The shipped rate points, from the shipped index (nothing heavy is loaded)."""
    from ..codec import shipped

    data = shipped.index()
    lines = [f"shipped rate points ({shipped.SHIPPED_DIR}):",
             f"  {'name':<9} {'default':<8} {'fingerprint':<12} {'N_r':>4} {'S':>3}  rate"]
    for p in data["points"]:
        variable = p.get("variable")
        if variable:
            rate = (f"variable: --level 0..127 (default {variable['default_level']}), or --bpp; "
                    f"anchors at λ_R {', '.join(f'{x:g}' for x in variable['lambda_rates'])} "
                    f"(N_r {', '.join(map(str, variable['residual_steps']))})")
            tier = p.get("low_tier")
            if tier:  # two compressors behind one level (docs/variable-rate.md)
                first, last = tier["own_levels"]
                rate = (f"variable: --level 0..127 (default {variable['default_level']}), or --bpp; levels "
                        f"0..{tier['levels'] - 1} a second compressor (its levels {first}..{last}, λ_R "
                        f"{', '.join(f'{x:g}' for x in tier['variable']['lambda_rates'])}"
                        f"{'; the prior alone decodes them' if tier.get('control') == 'none' else ''}), {tier['levels']}..127 "
                        f"the main one (its levels {tier['main_from']}..127, λ_R "
                        f"{', '.join(f'{x:g}' for x in variable['lambda_rates'])})")
        else:
            rate = f"fixed: trained at λ_R {p.get('trained_lambda_rate', p.get('lambda_rate')):g}"
        default = "yes" if p["name"] == data.get("default") else ""
        lines.append(f"  {p['name']:<9} {default:<8} {p['fingerprint']:<12} {p.get('residual_steps', ''):>4} "
                     f"{p.get('sampling_steps', ''):>3}  {rate}")
    lines.append("Fixed points are in rate order (r1 lowest); their bpp depends on the image (docs/small-profile.md).")
    return "\n".join(lines)


def cmd_info(args) -> int:
    if args.rates:
        if args.input:
            raise ResulicError("--rates lists the shipped rate points: give it without a file")
        print(rates_table())
        return 0
    if not args.input:
        raise ResulicError("give a .rslc file or folder, or --rates")
    path = Path(args.input)
    if not path.is_dir():
        if not path.exists():
            raise ResulicError(f"{path}: no such file or folder")
        print(json.dumps(_header_info(path, args.max_file_bytes), indent=2))
        return 0
    # A folder: one JSON object per line, errors as objects too, so the output stays parseable.
    failures = 0
    for p in sorted(q for q in path.iterdir() if q.suffix == SUFFIX):
        try:
            print(json.dumps(_header_info(p, args.max_file_bytes)))
        except ResulicError as exc:
            failures += 1
            print(json.dumps({"file": str(p), "error": str(exc)}))
    return 2 if failures else 0


def cmd_remote(args) -> int:
    from .client import cmd_remote as remote

    return remote(args)


COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info, "remote": cmd_remote}
# Ctrl-C and SIGTERM stop these at once (exit status 130 and 143); train, sweep and promote keep
# Ray Train's and Tune's own handling (a first Ctrl-C stops the trials and saves their state).
STOP_AT_ONCE = {"compress", "decompress", "info", "remote", "evaluate", "baselines", "bd-rate", "plot"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "tracking_uri", None):  # for this process and the Ray workers it starts
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    import contextlib

    from ..services.runtime import exit_status, quiet_libraries, set_verbose, stop_on_signals, stopping

    if args.verbose:
        set_verbose(True)
    quiet_libraries()  # imports nothing heavy: commands import torch & co. only once their inputs are checked

    try:
        from .evaluation_commands import COMMANDS as EVALUATION_COMMANDS
        from .platform_commands import COMMANDS as PLATFORM_COMMANDS

        with stop_on_signals() if args.command in STOP_AT_ONCE else contextlib.nullcontext():
            return {**COMMANDS, **EVALUATION_COMMANDS, **PLATFORM_COMMANDS}[args.command](args)
    except ResulicError as exc:
        if exc.__cause__ is not None and os.environ.get("RESULIC_VERBOSE", "") not in ("", "0"):
            import traceback  # --verbose: where a wrapped library error came from

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"resulic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (runtime.Terminated); files are whole or absent
        code = exit_status(exc)
        print(f"resulic: {'terminated' if code == 143 else 'interrupted'}", file=sys.stderr)
        if stopping():
            # Now, not after the libraries' exit hooks (Ray's shutdown, worker pools' joins: seconds);
            # Ray's own processes share the fate of the process that started them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
