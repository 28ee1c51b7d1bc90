"""Put trained parts of the small profile into the package (what a clone ships and uses).

    python jobs/release_small.py prior ray_results/stage0-small/model
    python jobs/release_small.py codecs --point r1=<codec folder> --point r2=<...> --default r2 \
        [--keep v1=platform/resulic/weights/small-codecs/variable]
    python jobs/release_small.py tiered --main <codec folder> --low <codec folder> --levels 8 \
        --low-levels 0 7 --main-from 14 -o <new codec folder>
    python jobs/release_small.py split --model <tiered codec folder> --main-out <folder> --low-out <folder>
    python jobs/release_small.py steps --model <codec folder> --residual-steps 60 45 10 5 -o <new codec folder>

'prior' copies a stage-0 run's prior to resulic/weights/small-prior (float16 storage; train the
codec stages on the released prior, backbone.source 'bundled') and saves every shipped point
again with it: their new files carry new fingerprints, and the files they wrote before still
decode (the replaced prior's identity must first be added to EARLIER_BUNDLED_PRIORS). 'codecs' writes the chosen
trained codecs, one per rate point in rate order, to resulic/weights/small-codecs with an
index.json (float16 weights; fingerprints recomputed). --keep lists an earlier shipped point
as it is, under a new name, so the files it wrote still decode; --note replaces the index's
provenance note (other provenance entries are kept). 'tiered' puts two trained variable-rate
models behind one rate level (resulic/codec/tiers.py): the low one codes the lowest levels; the
result is a codec folder to judge (benchmarks/compare_heldout.py) and then release with 'codecs'.
'split' takes a tiered codec apart again: each tier a whole variable-rate model (its own levels and
bits), to train on (init_from) and assemble anew.
'steps' writes a variable-rate model with other N_r at its (main) anchors: a decoder setting —
the same weights and bitstreams, a new fingerprint — judged and released the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

from resulic.errors import ResulicError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("prior", help="release a stage-0 prior")
    pr.add_argument("folder", type=Path, help="a stage-0 run's model folder (with unet/)")
    co = sub.add_parser("codecs", help="release trained codecs as the shipped rate points")
    co.add_argument("--point", action="append", required=True, metavar="NAME=FOLDER", help="in rate order")
    co.add_argument("--keep", action="append", default=[], metavar="NAME=FOLDER",
                    help="an earlier shipped point kept as it is (same fingerprint) under NAME, so its files still decode")
    co.add_argument("--default", required=True, help="the rate point commands use without --rate")
    co.add_argument("--note", default="", help="provenance note kept in index.json (e.g. the sweep's MLflow run)")
    ti = sub.add_parser("tiered", help="two trained variable-rate models behind one rate level")
    ti.add_argument("--main", type=Path, required=True, help="the codec folder for every level but the lowest")
    ti.add_argument("--low", type=Path, required=True, help="the codec folder for the lowest levels")
    ti.add_argument("--levels", type=int, required=True, help="how many of the lowest levels the low model codes")
    ti.add_argument("--low-levels", type=int, nargs=2, required=True, metavar=("FIRST", "LAST"),
                    help="the low model's own levels those levels span")
    ti.add_argument("--main-from", type=int, required=True,
                    help="the main model's own level at level --levels (its level 127 stays 127)")
    ti.add_argument("--main-residual-steps", type=int, nargs="+", metavar="N_R",
                    help="N_r at each of the main model's anchors (default: its own)")
    ti.add_argument("--low-residual-steps", type=int, nargs="+", metavar="N_R",
                    help="N_r at each of the low model's anchors (default: its own)")
    ti.add_argument("--default-level", type=int, help="the level files use unless told (default: the main model's)")
    ti.add_argument("--control", choices=("main", "low"), default="main",
                    help="whose control module decodes both tiers (default: the main model's)")
    ti.add_argument("--low-control", choices=("shared", "none"), default="shared",
                    help="'none': the low tier's levels decode with the prior alone (the control module's links off)")
    ti.add_argument("-o", "--output", type=Path, required=True, help="the new codec folder")
    sp = sub.add_parser("split", help="a tiered codec's two models, each a whole variable-rate model again")
    sp.add_argument("--model", type=Path, required=True, help="a tiered codec folder (rate_point.low_tier)")
    sp.add_argument("--main-out", type=Path, help="where its main tier goes")
    sp.add_argument("--low-out", type=Path, help="where its low tier goes")
    st = sub.add_parser("steps", help="a variable-rate model decoded with other N_r at its anchors")
    st.add_argument("--model", type=Path, required=True, help="a variable-rate codec folder (a tiered one: its main anchors)")
    st.add_argument("--residual-steps", type=int, nargs="+", required=True, metavar="N_R", help="N_r at each anchor")
    st.add_argument("-o", "--output", type=Path, required=True, help="the new codec folder")
    args = p.parse_args(argv)
    try:
        if args.what == "tiered":
            return release_tiered(args)
        if args.what == "steps":
            return release_steps(args)
        if args.what == "split":
            return release_split(args)
        return release_prior(args.folder) if args.what == "prior" else release_codecs(args)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def release_prior(folder: Path) -> int:
    import torch
    from diffusers import UNet2DConditionModel

    from resulic.codec import shipped
    from resulic.config import BackboneConfig
    from resulic.models.backbone import EARLIER_BUNDLED_PRIORS, PRIOR_SUBFOLDER, SMALL_PRIOR, load_backbone

    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder=PRIOR_SUBFOLDER, use_safetensors=True)
    except (OSError, ValueError) as exc:  # no unet/, no safetensors, a broken config: one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResulicError(f"{folder}: not a stage-0 prior folder with {PRIOR_SUBFOLDER}/ ({detail})") from None
    if (SMALL_PRIOR / PRIOR_SUBFOLDER).is_dir():
        # The shipped codecs' files name the prior they were made through: it must stay known.
        current = load_backbone(BackboneConfig(profile="small", source="bundled")).identity
        if current not in EARLIER_BUNDLED_PRIORS:
            raise ResulicError(f"the shipped prior ({current}) is not in EARLIER_BUNDLED_PRIORS "
                               "(resulic/models/backbone.py): add it first, or the files of the shipped codecs "
                               "would no longer decode")
    staged = SMALL_PRIOR.with_name(f".{SMALL_PRIOR.name}.new")
    shutil.rmtree(staged, ignore_errors=True)
    unet.to(torch.float16).save_pretrained(staged / PRIOR_SUBFOLDER, safe_serialization=True)
    info = folder / "training.json"
    if info.is_file():
        shutil.copy(info, staged / "training.json")  # lineage: the stage-0 run
    shutil.rmtree(SMALL_PRIOR, ignore_errors=True)
    staged.rename(SMALL_PRIOR)
    print(f"prior from {folder} -> {SMALL_PRIOR} (float16)")
    if not (shipped.SHIPPED_DIR / shipped.INDEX).is_file():
        return 0  # no shipped codecs to carry over
    for point in shipped.adopt_prior()["points"]:
        print(f"  {point['name']}: fingerprint {point['fingerprint']} "
              f"(still decodes {', '.join(point.get('earlier_fingerprints', [])) or 'nothing earlier'})")
    return 0


@contextlib.contextmanager
def one_line_config_errors(option: str | None = None):
    """A config the command built that does not validate: one line, the option (else the failing
    key) and pydantic's message."""
    from pydantic import ValidationError

    try:
        yield
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ResulicError(f"{option or '.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def release_tiered(args) -> int:
    from resulic.codec import tiers
    from resulic.codec.store import load_codec, save_codec

    main_codec = load_codec(args.main)
    low_codec = load_codec(args.low, backbone=main_codec.backbone)
    with one_line_config_errors():
        codec = tiers.assemble(tiers.with_residual_steps(main_codec, args.main_residual_steps),
                               tiers.with_residual_steps(low_codec, args.low_residual_steps),
                               levels=args.levels, own_levels=tuple(args.low_levels), main_from=args.main_from,
                               default_level=args.default_level, control=args.control, low_control=args.low_control)
    save_codec(codec, args.output)
    print(f"{args.output}: levels 0..{args.levels - 1} from {args.low} (its levels {args.low_levels[0]}.."
          f"{args.low_levels[1]}), {args.levels}..127 from {args.main} (its levels {args.main_from}..127); "
          f"fingerprint {codec.fingerprint.hex()}")
    return 0


def release_split(args) -> int:
    from resulic.codec import tiers
    from resulic.codec.store import load_codec, save_codec

    if args.main_out is None and args.low_out is None:
        raise ResulicError("split: name --main-out, --low-out or both")
    main_codec, low_codec = tiers.split(load_codec(args.model))
    for which, codec, out in (("main", main_codec, args.main_out), ("low", low_codec, args.low_out)):
        if out is not None:
            save_codec(codec, out)
            print(f"{out}: the {which} tier of {args.model}, its own levels 0..127; fingerprint {codec.fingerprint.hex()}")
    return 0


def release_steps(args) -> int:
    from resulic.codec import tiers
    from resulic.codec.store import load_codec, save_codec

    model = load_codec(args.model)
    with one_line_config_errors("--residual-steps"):
        codec = tiers.with_residual_steps(model, args.residual_steps)
    save_codec(codec, args.output)
    print(f"{args.output}: {args.model} with N_r {', '.join(map(str, args.residual_steps))} at its anchors "
          f"(was {', '.join(map(str, model.config.rate_point.variable.residual_steps))}); "
          f"fingerprint {codec.fingerprint.hex()} (was {model.fingerprint.hex()})")
    return 0


def release_codecs(args) -> int:
    from resulic.codec import shipped

    def named(option: str, items: list[str]) -> list[tuple[str, Path]]:
        pairs = []
        for item in items:
            name, sep, folder = item.partition("=")
            if not sep:
                raise ResulicError(f"{option} {item}: expected NAME=FOLDER")
            pairs.append((name, Path(folder)))
        return pairs

    previous = shipped.index().get("provenance", {}) if (shipped.SHIPPED_DIR / shipped.INDEX).is_file() else {}
    provenance = {**previous, "note": args.note} if args.note else previous
    data = shipped.release(named("--point", args.point), args.default, provenance, kept=named("--keep", args.keep))
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
