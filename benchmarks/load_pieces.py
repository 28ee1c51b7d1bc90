"""What storing a shipped folder's weights as shared pieces costs a load: the same folder loaded
from its pieces and written out whole, interleaved, median of repeats (docs/small-profile.md,
round 18). The encode-only load is what `resulic compress` pays; the whole load what a decoder pays.

    python benchmarks/load_pieces.py [--point variable] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--point", default=None, help="a shipped rate point (default: the default one)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    from resulic.codec import shipped, store
    from resulic.services.runtime import configure_threads

    configure_threads()
    pieced = shipped.folder_for(args.point)
    with tempfile.TemporaryDirectory() as tmp:
        whole = store.materialize(pieced, Path(tmp) / pieced.name)
        backbone = shipped.load(args.point).backbone
        print(f"{pieced.name}: {len(store.read_manifest(pieced).get('pieces', {}))} file(s) as pieces; "
              f"median of {args.repeats}, interleaved, after one warm-up each")
        print("| load | whole folder s | from pieces s | ratio |")
        print("|---|---|---|---|")
        for label, load in (("encode only", lambda f: store.load_codec(f, encode_only=True)),
                            ("whole codec", lambda f: store.load_codec(f, backbone=backbone))):
            times: dict[str, list[float]] = {"whole": [], "pieced": []}
            for folder in (whole, pieced):
                load(folder)
            for _ in range(args.repeats):
                for key, folder in (("whole", whole), ("pieced", pieced)):
                    start = time.perf_counter()
                    load(folder)
                    times[key].append(time.perf_counter() - start)
            a, b = statistics.median(times["whole"]), statistics.median(times["pieced"])
            print(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
