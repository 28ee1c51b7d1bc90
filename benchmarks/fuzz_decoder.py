"""Fuzz the decoder with hostile files, each decoded twice in a child process.

    python benchmarks/fuzz_decoder.py [--count 10000] [--seed 0] [--timeout 120] [--json out.jsonl]
    python benchmarks/fuzz_decoder.py --table-from out.jsonl      # the table of a (partial) run

Inputs (seeded, so a run is reproducible; the codec is the embedded tiny profile):

- ``crafted_header``: valid container syntax and CRC with random sizes, overrides (steps,
  guidance, seed), text modes, text sections and latent streams of random length and content;
  half name this model's fingerprint, the rest a random one.
- ``latent_size``: this model's header, 64x64 to 256x256, and a latent stream of 1 byte to
  1 MiB (random, all 0xFF, all 0x00, one repeated word), CRC recomputed.
- ``text_section``: this model's header with a random text section of up to 64 KiB.
- ``mutated_file``: real files (with and without text and overrides) with 1-8 bytes flipped,
  inserted or deleted, or cut short, the CRC recomputed in 90 % of them; or one byte of the
  fixed header (fingerprint, size) changed; or (10 %) unchanged.
- ``random_bytes``: up to 4 KiB of noise.

A single child process (``--worker``) decodes the inputs in a loop and answers one JSON line
per input: the outcome (``ok`` or the exception's class and message kind), a digest of the
pixels, whether a second decode gave the same result, and its peak RSS. The parent restarts it
when it dies (a signal) or does not answer within the timeout (a hang). Decode limits:
``max_pixels`` 65,536 so that 10,000 inputs finish on a CPU (the limits are tested separately);
the rest are the library's defaults.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import select
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUZZ_MAX_PIXELS = 256 * 256
CATEGORIES = ("crafted_header", "latent_size", "text_section", "mutated_file", "random_bytes")
COLUMNS = (*CATEGORIES, "issue13")
LATENT_SIZES = [1, 2, 3, 4, 7, 8, 9, 12, 16, 31, 64, 100, 255, 256, 1000, 4096, 65536, 1 << 20]


# -- inputs ----------------------------------------------------------------------------------
def _crc_fixed(body: bytes) -> bytes:
    from resulic.codec.container import _crc

    return body + _crc(body)


def _header_bytes(fingerprint: bytes, width: int, height: int, *, text_mode: int = 0, steps=None, guidance=None,
                  seed=None) -> bytes:
    """Container header bytes written by hand, so values the packer refuses can be sent too."""
    from resulic.codec.container import (FLAG_OVERRIDES, FORMAT_VERSION, MAGIC, OVR_GUIDANCE, OVR_SEED, OVR_STEPS,
                                         TEXT_MODE_SHIFT, write_varint)

    mask = (OVR_STEPS if steps is not None else 0) | (OVR_GUIDANCE if guidance is not None else 0) | (
        OVR_SEED if seed is not None else 0)
    flags = (FLAG_OVERRIDES if mask else 0) | (text_mode << TEXT_MODE_SHIFT)
    out = bytearray([MAGIC, (FORMAT_VERSION << 4) | flags]) + fingerprint
    out += write_varint(width) + write_varint(height)
    if mask:
        out += write_varint(mask)
        for value in (steps, guidance, seed):
            if value is not None:
                out += write_varint(value)
    return bytes(out)


def _payload(rng: random.Random, size: int) -> bytes:
    kind = rng.choice(["random", "ff", "zero", "word"])
    if kind == "random":
        return rng.randbytes(size)
    if kind == "ff":
        return b"\xff" * size
    if kind == "zero":
        return bytes(size)
    word = rng.randbytes(4)
    return (word * (size // 4 + 1))[:size]


def make_inputs(fingerprint: bytes, real_files: list[bytes], count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` (category, bytes) pairs, the categories in turn."""
    from resulic.codec.container import write_varint

    rng = random.Random(seed)
    inputs = []
    for i in range(count):
        category = CATEGORIES[i % len(CATEGORIES)]
        if category == "crafted_header":
            fp = fingerprint if rng.random() < 0.5 else rng.randbytes(4)
            side = lambda: rng.choice([1, 2, 63, 64, 127, 128, 129, 200, 256, 257, 1000, 65535, 65536])  # noqa: E731
            text_mode = rng.randrange(4)
            head = _header_bytes(
                fp, side(), side(), text_mode=text_mode,
                steps=rng.choice([None, None, 1, 2, 12, 13, 299, 300, 999]),
                guidance=rng.choice([None, None, 0, 100, 250, 2000, 2001, 10000]),
                seed=rng.choice([None, None, 0, 7, 2**32 - 1]),
            )
            text = rng.randbytes(rng.choice([0, 1, 5, 40, 300])) if text_mode else b""
            body = head + (write_varint(len(text)) + text if text_mode else b"")
            body += _payload(rng, rng.choice(LATENT_SIZES[:16]))
            data = _crc_fixed(body)
        elif category == "latent_size":
            side = rng.choice([64, 128, 200, 256])
            size = rng.choice(LATENT_SIZES) if rng.random() < 0.7 else rng.randrange(1, 1 << 20)
            data = _crc_fixed(_header_bytes(fingerprint, side, side) + _payload(rng, size))
        elif category == "text_section":
            text = rng.randbytes(rng.choice([1, 2, 8, 64, 512, 4096, 65536]))
            latent = real_files and _latent_of(rng.choice(real_files)) or rng.randbytes(64)
            data = _crc_fixed(_header_bytes(fingerprint, 64, 64, text_mode=rng.randrange(1, 4)) + write_varint(len(text))
                              + text + latent)
        elif category == "mutated_file":
            data = _mutate(rng, rng.choice(real_files))
        else:
            data = rng.randbytes(rng.randrange(0, 4097))
        inputs.append((category, data))
    return inputs


def _latent_of(data: bytes) -> bytes:
    from resulic.codec.container import unpack

    return unpack(data).latent


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """1-8 changes anywhere; or (1 in 10) none; or (2 in 10) one byte of the fixed header changed."""
    body = bytearray(data[:-2])
    dice = rng.random()
    if dice < 0.1:
        return data
    if dice < 0.3:
        body[rng.randrange(2, 12)] = rng.randrange(256)
        return _crc_fixed(bytes(body))
    for _ in range(rng.randint(1, 8)):
        op, pos = rng.choice(["flip", "flip", "set", "insert", "delete"]), rng.randrange(len(body))
        if op == "flip":
            body[pos] ^= 1 << rng.randrange(8)
        elif op == "set":
            body[pos] = rng.randrange(256)
        elif op == "insert":
            body[pos:pos] = rng.randbytes(rng.randint(1, 4))
        elif len(body) > 2:
            del body[pos]
    if rng.random() < 0.1:
        body = body[: rng.randrange(1, len(body) + 1)]
    return _crc_fixed(bytes(body)) if rng.random() < 0.9 else bytes(body) + data[-2:]


def issue_files(fingerprint: bytes) -> list[tuple[str, bytes]]:
    """The files of issue 13: this model's header, 64x64, and a latent stream of 1,000,000 bytes
    of 0xFF (SIGSEGV in CompressAI's decoder) or of 1 byte (a different image on every run)."""
    head = _header_bytes(fingerprint, 64, 64)
    return [("issue13", _crc_fixed(head + b"\xff" * 1_000_000)), ("issue13", _crc_fixed(head + b"\x07"))]


def real_files(codec) -> list[bytes]:
    """A few files this codec wrote: plain, with text, with overrides, at two sizes."""
    from resulic.images import sample_images

    _, img = sample_images(1)[0]
    small, wide = img.crop((0, 0, 64, 64)), img.crop((40, 20, 140, 80))  # one 128-px block each: cheap decodes
    return [codec.encode(small).data, codec.encode(wide).data, codec.encode(small, text="a red barn by a pond").data,
            codec.encode(wide, steps=2, guidance=1.0, seed=9).data]


# -- the child process -----------------------------------------------------------------------
def worker(max_pixels: int) -> None:
    """Decode length-prefixed inputs from stdin; one JSON line each on stdout."""

    from resulic.codec import Codec, DecodeLimits
    from resulic.errors import BitstreamError, DecodeLimitError, ResulicError
    from resulic.services.memory import peak_mb, reset_peak, resident_mb
    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    codec = Codec.build()
    limits = DecodeLimits(max_pixels=max_pixels)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # anything a library prints must not break the protocol
    out.write(json.dumps({"ready": codec.fingerprint.hex()}) + "\n")
    stdin = sys.stdin.buffer

    def decode(data: bytes) -> tuple[str, str]:
        try:
            image = codec.decode(data, limits=limits).image
            return "ok", hashlib.sha256(image.tobytes()).hexdigest()[:16]
        except DecodeLimitError as exc:
            return f"DecodeLimitError:{exc.limit}", str(exc)
        except BitstreamError as exc:
            return f"{type(exc).__name__}:{_kind(str(exc))}", str(exc)
        except ResulicError as exc:
            return f"{type(exc).__name__}", str(exc)
        except Exception as exc:  # noqa: BLE001  (anything else is a finding)
            return f"UNEXPECTED:{type(exc).__name__}", str(exc)[:200]

    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        data = stdin.read(struct.unpack("<I", head)[0])
        reset_peak()  # each input's own peak, not the worker's lifetime peak
        before = resident_mb()
        t0 = time.perf_counter()
        first, second = decode(data), decode(data)
        rss_mb = peak_mb()
        out.write(json.dumps({"outcome": first[0], "detail": first[1][:160], "same": first == second,
                              "seconds": time.perf_counter() - t0, "rss_mb": rss_mb,
                              "rise_mb": rss_mb - before}) + "\n")


def _kind(message: str) -> str:
    """A message's kind: its text up to the first detail (a number, a parenthesis or a colon)."""
    kind = message.split("(")[0].split(":")[0]
    return " ".join(w for w in kind.split() if not any(c.isdigit() for c in w)).strip() or message[:40]


@dataclass
class Result:
    category: str
    outcome: str  # "ok", "<Error>:<kind>", "SIGNAL:<n>", "HANG", "UNEXPECTED:<type>"
    same: bool
    seconds: float
    rss_mb: float
    detail: str = ""
    rise_mb: float = 0.0  # the peak's rise over the worker's resident size before this input


class DecodeWorker:
    """The child process; restarted after it dies or hangs."""

    def __init__(self, timeout_s: float, max_pixels: int = FUZZ_MAX_PIXELS) -> None:
        self.timeout_s, self.max_pixels = timeout_s, max_pixels
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO),
                                                              os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", "--max-pixels", str(self.max_pixels)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        line = self._readline(600)
        if line is None or "ready" not in line:
            raise RuntimeError(f"the decode worker did not start (exit {self.proc.poll()})")

    def _readline(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.decode() if line else None

    def decode(self, category: str, data: bytes) -> Result:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._readline(self.timeout_s)
        if line is None:  # died or hung: record it, start afresh for the next input
            code = self.proc.poll()
            if code is None:
                self.proc.kill()
                code = self.proc.wait()
                outcome = "HANG"
            else:
                outcome = f"SIGNAL:{-code}" if code < 0 else f"EXIT:{code}"
            self.proc, self.restarts = None, self.restarts + 1
            return Result(category, outcome, False, self.timeout_s, 0.0)
        r = json.loads(line)
        return Result(category, r["outcome"], r["same"], r["seconds"], r["rss_mb"], r["detail"], r["rise_mb"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def run(inputs: list[tuple[str, bytes]], timeout_s: float = 120.0, progress: bool = False,
        log: Path | None = None) -> list[Result]:
    """Decode every input in the worker; with ``log``, append each result as a JSON line."""
    worker_ = DecodeWorker(timeout_s)
    results = []
    sink = open(log, "w") if log else None
    try:
        for i, (category, data) in enumerate(inputs):
            results.append(worker_.decode(category, data))
            if sink:
                sink.write(json.dumps(results[-1].__dict__) + "\n")
                sink.flush()
            if progress and (i + 1) % 500 == 0:
                print(f"  {i + 1}/{len(inputs)}", file=sys.stderr, flush=True)
    finally:
        worker_.close()
        if sink:
            sink.close()
    return results


def is_failure(r: Result) -> bool:
    return r.outcome.split(":")[0] in ("SIGNAL", "HANG", "EXIT", "UNEXPECTED") or not r.same


def table(results: list[Result]) -> str:
    """Markdown: outcome counts by input category."""
    counts = collections.Counter((r.outcome, r.category) for r in results)
    outcomes = sorted({o for o, _ in counts}, key=lambda o: (-sum(counts[o, c] for c in COLUMNS), o))
    lines = ["| outcome | " + " | ".join(COLUMNS) + " | total |", "|---" * (len(COLUMNS) + 2) + "|"]
    for o in outcomes:
        row = [counts[o, c] for c in COLUMNS]
        lines.append(f"| {o} | " + " | ".join(str(n) for n in row) + f" | {sum(row)} |")
    totals = [sum(1 for r in results if r.category == c) for c in COLUMNS]
    lines.append("| **total** | " + " | ".join(str(n) for n in totals) + f" | {len(results)} |")
    rows = (("worst s (two decodes)", "seconds", "{:.2f}"), ("peak MB", "rss_mb", "{:.0f}"),
            ("rise MB (over the resident size before)", "rise_mb", "{:+.0f}"))
    for label, field, fmt in rows:
        worst = [max((getattr(r, field) for r in results if r.category == c), default=0.0) for c in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(fmt.format(w) for w in worst) + f" | {fmt.format(max(worst))} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per input before it counts as a hang")
    parser.add_argument("--json", help="write every result here as it comes (JSON lines)")
    parser.add_argument("--table-from", metavar="JSONL", help="only print the summary of an earlier (partial) --json run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-pixels", type=int, default=FUZZ_MAX_PIXELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.max_pixels)
        return 0
    if args.table_from:
        results = [Result(**json.loads(line)) for line in Path(args.table_from).read_text().splitlines() if line]
        summary(results, None)
        return 1 if any(is_failure(r) for r in results) else 0
    sys.path[:0] = [str(REPO / "platform"), str(REPO)]
    from resulic.codec import Codec
    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    codec = Codec.build()
    t0 = time.perf_counter()
    inputs = issue_files(codec.fingerprint) + make_inputs(codec.fingerprint, real_files(codec), args.count, args.seed)
    results = run(inputs, args.timeout, progress=True, log=Path(args.json) if args.json else None)
    summary(results, time.perf_counter() - t0, args.seed)
    return 1 if any(is_failure(r) for r in results) else 0


def summary(results: list[Result], seconds: float | None, seed: int | None = None) -> None:
    failures = [r for r in results if is_failure(r)]
    print(table(results))
    print()
    took = f", {seconds:.0f} s" if seconds is not None else ""
    print(f"{len(results)} inputs (seed {seed}){took}; decode time per input (two decodes): median "
          f"{statistics.median(r.seconds for r in results):.3f} s; worker restarts: "
          f"{sum(r.outcome.split(':')[0] in ('SIGNAL', 'HANG', 'EXIT') for r in results)}; "
          f"different second decode: {sum(not r.same for r in results)}; "
          f"peak RSS {max(r.rss_mb for r in results):.0f} MB; "
          f"slowest input {max(r.seconds for r in results):.2f} s (two decodes)")
    for r in failures[:20]:
        print(f"FAILURE {r.category}: {r.outcome} same={r.same} {r.detail}")


if __name__ == "__main__":
    sys.exit(main())
