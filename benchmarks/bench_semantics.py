"""Semantics benchmark: the offline residual matchers, and Pfo's time per iteration (tiny).

    python benchmarks/bench_semantics.py [--captions N] [--iterations 10]

Residual matchers, on N captions of the measuring split of ../shared/datasets/captions
(the text coder's fit/measure split) that have at least two phrases:
- "identical": residual(c, c) must be empty;
- "one phrase dropped": the reconstruction's caption is c without its last phrase; the residual
  should hold that phrase's content words (recall) and little else (extra phrases kept);
- coded bytes (the file's text section) of the residual against the full caption.
Pfo: tiny profile on a scikit-image photo; median seconds per iteration (no selection decodes)
and seconds per selection decode, at two image sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO.parent / "shared" / "datasets" / "captions" / "flickr2w_captions.jsonl"
BPE = REPO.parent / "shared" / "vocab" / "bpe_simple_vocab_16e6.txt.gz"


# Hand-written pairs: (original, reconstruction's caption, words the residual must hold; none = empty).
HAND_PAIRS = [
    ("A young boy in a green shirt is eating a green apple.", "A little boy wearing a green shirt eats a green apple.", None),
    ("Two dogs play in the snow next to a wooden fence.", "Two dogs are playing in the snow beside a wooden fence.", None),
    ("A man rides a bicycle down a city street.", "A man riding a bike on a street in the city.", None),
    ("A woman is sitting on a bench in a park.", "A lady sits on a park bench.", None),
    ("A group of people walking down a street.", "Several people are walking along a street.", None),
    ("A child is holding a red umbrella in the rain.", "A kid holds a red umbrella while it rains.", None),
    ("A red barn surrounded by trees, reflected in a pond.", "Red house surrounded by trees.", {"pond"}),
    ("A man rides a bicycle on a city street with a red bus behind him.", "A man riding a bike on a street.", {"bus"}),
    ("A woman walks a dog on the beach, carrying a surfboard.", "A woman walks a dog on the beach.", {"surfboard"}),
    ("Two children play soccer on a field, with a goal in the background.", "Two kids play football on a field.", {"goal"}),
]


def bench_residual(n: int) -> None:
    from resulic.config import ResidualConfig
    from resulic.models.tokenizer import clip_tokenizer_from_bpe
    from resulic.semantics import text_model
    from resulic.semantics.residual import build_residual, content_words, split_phrases
    from resulic.semantics.text_coding import encode_ids

    if not CAPTIONS.exists() or not BPE.exists():
        print(f"residual: skipped ({CAPTIONS} or {BPE} is not present)")
        return
    tokenizer = clip_tokenizer_from_bpe(BPE)
    _, measure = text_model.split_captions(CAPTIONS)
    pairs = []
    for caption in measure:
        phrases = split_phrases(caption)
        if len(phrases) >= 2:
            pairs.append((caption, ", ".join(phrases[:-1]), phrases[-1]))
        if len(pairs) == n:
            break

    def coded(text: str) -> int:
        return len(encode_ids(tokenizer(text, add_special_tokens=False).input_ids))

    full_bytes = statistics.mean(coded(c) for c, _, _ in pairs)
    print(f"residual matchers on {len(pairs)} captions (full caption: {full_bytes:.1f} coded bytes on average)\n")
    print("| matcher | identical → empty | dropped phrase recalled | extra phrases kept | residual bytes | ms / pair |")
    print("|---|---|---|---|---|---|")
    hand_rows: list[str] = []
    for name, config in (("embedding (all-MiniLM-L6-v2)", ResidualConfig()), ("lexical", ResidualConfig(matcher="lexical"))):
        extractor = build_residual(config)
        extractor.residual("warm up", "the model")
        empty = recalled = extra = 0
        sizes, times = [], []
        for caption, reconstruction, dropped in pairs:
            empty += extractor.residual(caption, caption) == ""
            t0 = time.perf_counter()
            residual = extractor.residual(caption, reconstruction)
            times.append(time.perf_counter() - t0)
            recalled += content_words(dropped) <= content_words(residual)
            extra += max(0, len(split_phrases(residual)) - 1)
            sizes.append(coded(residual))
        k = len(pairs)
        hand_ok = sum(
            (extractor.residual(o, r) == "") if need is None else need <= content_words(extractor.residual(o, r))
            for o, r, need in HAND_PAIRS
        )
        hand_rows.append(f"| {name} | {hand_ok}/{len(HAND_PAIRS)} |")
        print(f"| {name} | {empty / k:.0%} | {recalled / k:.0%} | {extra / k:.2f} | {statistics.mean(sizes):.1f} | "
              f"{1000 * statistics.median(times):.1f} |")
    print(f"\nhand-written pairs ({sum(p[2] is None for p in HAND_PAIRS)} paraphrases that must give an empty residual, "
          f"{sum(p[2] is not None for p in HAND_PAIRS)} with a missing object that must be kept):\n")
    print("| matcher | correct |")
    print("|---|---|")
    print("\n".join(hand_rows))
    print()


def bench_pfo(iterations: int) -> None:
    import torch

    from resulic.codec import Codec
    from resulic.config import PfoConfig
    from resulic.images import image_to_tensor, pad_to_multiple, sample_images
    from resulic.semantics.pfo import optimize_prompt
    from resulic.semantics.prompt import text_token_ids

    torch.set_num_threads(1)
    codec = Codec.build()
    _, photo = sample_images(1)[0]
    ids = text_token_ids(codec.backbone.tokenizer, "an astronaut in a white suit with a flag")
    print(f"Pfo, tiny profile, {len(ids)} tokens, {torch.get_num_threads()} torch thread(s), {iterations} iterations\n")
    print("| image | s / iteration | s / selection decode |")
    print("|---|---|---|")
    for w, h in ((256, 256), (512, 384)):
        img = photo.resize((w, h))
        with torch.no_grad():
            z_c = codec.compressor.compress(codec.backbone.encode(pad_to_multiple(image_to_tensor(img), 128))).z_c
        run = optimize_prompt(codec, img, z_c, ids, PfoConfig(iterations=iterations, eval_every=10**6, progress=False))
        decodes = []
        for _ in range(3):
            t0 = time.perf_counter()
            S, g, seed = codec.settings(None, None, None)
            with torch.no_grad():
                codec.backbone.decode(codec.sample(z_c, ids, S, g, seed)[0])
            decodes.append(time.perf_counter() - t0)
        per_iteration = (run.seconds - 2 * statistics.median(decodes)) / run.iterations  # minus initial+final selection
        print(f"| {w}×{h} | {per_iteration:.3f} | {statistics.median(decodes):.3f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=200)
    p.add_argument("--iterations", type=int, default=10)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    bench_residual(args.captions)
    bench_pfo(args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
