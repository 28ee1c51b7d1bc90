"""Hostile trained-codec folders: each mutation of a real folder is loaded with ``load_codec`` and
must end loaded or in one line of ``ModelLoadError``/``ConfigError``, within a time limit.

The attacker of issue 25 rewrites the manifest's SHA-256 after every change (anyone can), so the
mutations below reach the YAML, JSON and safetensors parsers and the weight checks, not only the
hash check. Kinds: hostile YAML (aliases, tags, nesting, size, encodings, wrong values), hostile
manifests, safetensors edits (renamed, dropped, reshaped, retyped, non-finite, many empty tensors,
huge header lengths, truncation, byte flips, coding tables valid and corrupt) and file-system
tricks (links out of the folder, links inside it, FIFOs, folders and missing files in place of a
file). ``tests/test_fuzz_folders.py`` runs a few hundred of them; docs/security.md has the table.

    python benchmarks/fuzz_folders.py --count 1000 --seed 0
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = ("compressor.safetensors", "control.safetensors")
FILES = ("config.yaml", *WEIGHTS, "manifest.json")


# -- helpers ---------------------------------------------------------------------------------
def refresh_manifest(folder: Path) -> None:
    """What an attacker does after editing a folder: the manifest's hashes made to match again."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in manifest["files"]:
        p = folder / name
        if p.is_file() and not p.is_symlink():
            manifest["files"][name] = hashlib.sha256(p.read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest, indent=2))


def _read_st(path: Path) -> dict:
    from safetensors.torch import load_file

    return dict(load_file(path))


def _write_st(path: Path, state: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, path)


def _replace_raw(folder: Path, name: str, data: bytes) -> None:
    (folder / name).unlink()
    (folder / name).write_bytes(data)


# -- YAML ------------------------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "billion_laughs": billion_laughs(),
    "anchor_only": "backbone: &b {profile: tiny}\n",
    "alias_merge": "x: &x {profile: tiny}\nbackbone:\n  <<: *x\n",
    "python_tag": "!!python/object/apply:os.system ['echo pwned > /tmp/pwned']\n",
    "python_name": "backbone: !!python/name:os.system\n",
    "unknown_tag": "backbone: !foo bar\n",
    "binary_tag": "backbone: !!binary AAAA\n",
    "deep_flow": "a: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "deep_block": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n",
    "not_mapping": "- 1\n- 2\n",
    "scalar": "hello\n",
    "empty": "",
    "huge": "a: '" + "x" * (80 << 10) + "'\n",
    "long_line_small": "a: " + "9" * 4000 + "\n",
    "tab_indent": "backbone:\n\tprofile: tiny\n",
    "dup_keys": "stride: 128\nstride: 64\n",
}
BAD_VALUES = [-1, 0, 10**12, 2**64, "many", None, [], {}, 1e308, float("nan"), True, "x" * 1000, [1] * 100]
CONFIG_KEYS = [
    ("stride",), ("backbone", "profile"), ("backbone", "source"), ("backbone", "seed"), ("compressor", "channels"),
    ("compressor", "latent_dim"), ("compressor", "groups"), ("compressor", "channel_context"),
    ("compressor", "latent_channels"), ("compressor", "gain_anchors"), ("control", "size_ratio"),
    ("control", "conditioning_channels"), ("rate_point", "seed"), ("rate_point", "sampling_steps"),
    ("rate_point", "residual_steps"), ("rate_point", "guidance"), ("rate_point", "eta"), ("nope",),
    ("rate_point", "variable"),
]


def m_yaml_hostile(folder: Path, rng: random.Random) -> str:
    name = rng.choice(sorted(HOSTILE_YAML))
    (folder / "config.yaml").write_text(HOSTILE_YAML[name])
    return name


def m_yaml_value(folder: Path, rng: random.Random) -> str:
    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    key, value = rng.choice(CONFIG_KEYS), rng.choice(BAD_VALUES)
    node = cfg
    for part in key[:-1]:
        node = node.setdefault(part, {})
    if rng.random() < 0.2:
        node.pop(key[-1], None)
    else:
        node[key[-1]] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ".".join(key)


def m_yaml_bytes(folder: Path, rng: random.Random) -> str:
    data = bytearray((folder / "config.yaml").read_bytes())
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data))
        data[i] = rng.choice([rng.randrange(256), ord("&"), ord("*"), ord("!"), ord("["), ord("{"), ord(":"), 0xFF])
    (folder / "config.yaml").write_bytes(bytes(data))
    return "flip"


# -- manifest --------------------------------------------------------------------------------
def m_manifest(folder: Path, rng: random.Random) -> str:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    kind = rng.choice(["deep", "huge", "not_json", "version", "no_files", "files_list", "format", "flip",
                       "not_utf8", "fingerprint", "list"])
    if kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "huge":
        manifest["pad"] = "x" * (100 << 10)
        path.write_text(json.dumps(manifest))
    elif kind == "not_json":
        path.write_text("{format: resulic-codec")
    elif kind == "version":
        manifest["version"] = rng.choice([2, 0, "1", None, 10**100])
        path.write_text(json.dumps(manifest))
    elif kind == "no_files":
        del manifest["files"]
        path.write_text(json.dumps(manifest))
    elif kind == "files_list":
        manifest["files"] = list(manifest["files"].values())
        path.write_text(json.dumps(manifest))
    elif kind == "format":
        manifest["format"] = "pickle"
        path.write_text(json.dumps(manifest))
    elif kind == "flip":
        data = bytearray(path.read_bytes())
        data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
    elif kind == "not_utf8":
        path.write_bytes(b"\xff\xfe" + path.read_bytes())
    elif kind == "fingerprint":
        manifest["fingerprint"] = rng.choice(["00000000", "x" * 10_000, 5, None])
        path.write_text(json.dumps(manifest))
    else:
        path.write_text("[1, 2, 3]")
    return kind


# -- safetensors -----------------------------------------------------------------------------
def m_tensors(folder: Path, rng: random.Random, cdf_tables: dict | None = None) -> str:
    import torch

    name = rng.choice(WEIGHTS)
    path = folder / name
    state = _read_st(path)
    keys = sorted(state)
    key = rng.choice(keys)
    kind = rng.choice(["rename", "nope_cdf", "drop", "shape", "dtype", "nonfinite", "many_empty", "extra",
                       "scalar", "cdf_valid", "cdf_bad"])
    if kind == "rename":
        state[key.rpartition(".")[0] + ".x" + str(rng.randrange(100))] = state.pop(key)
    elif kind == "nope_cdf":
        state["nope._quantized_cdf"] = torch.zeros(2, 3, dtype=torch.int32)
    elif kind == "drop":
        del state[key]
    elif kind == "shape":
        t = state[key]
        state[key] = torch.zeros(*[max(1, d + rng.choice([-1, 1, 7])) for d in t.shape] or [2], dtype=t.dtype)
    elif kind == "dtype":
        t = state[key]
        state[key] = t.to(rng.choice([torch.int32, torch.float16, torch.int64, torch.bool, torch.uint8]))
    elif kind == "nonfinite":
        t = state[key]
        if t.is_floating_point() and t.numel():
            t = t.clone()
            t.view(-1)[rng.randrange(t.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
            state[key] = t
    elif kind == "many_empty":
        for i in range(rng.choice([100, 5_000, 20_000])):
            state[f"e{i}"] = torch.zeros(0)
    elif kind == "extra":
        state[rng.choice(["a", "x.y.z", key + ".weight", "__metadata__x"])] = torch.zeros(3)
    elif kind == "scalar":
        state[key] = torch.tensor(1.0)
    elif kind in ("cdf_valid", "cdf_bad") and name == "compressor.safetensors" and cdf_tables:
        tables = {k: v.clone() for k, v in cdf_tables.items()}
        if kind == "cdf_bad":
            k = rng.choice(sorted(tables))
            t = tables[k]
            part = k.rpartition(".")[2]
            if part == "_quantized_cdf":
                row = rng.randrange(t.shape[0])
                t[row, rng.randrange(t.shape[1])] = rng.choice([-5, 0, 1 << 16, (1 << 16) + 5, 2**31 - 1])
                t[row, 1] = t[row, 0]  # a zero-width symbol at least
            elif part == "_cdf_length":
                t[rng.randrange(t.numel())] = rng.choice([0, 1, 10**6, -3])
            elif part == "_offset":
                tables[k] = t[:-1]
            else:
                t[rng.randrange(t.numel())] = rng.choice([0.0, -1.0, float("nan")])
        state.update(tables)
    _write_st(path, state)
    return f"{name.split('.')[0]}:{kind}"


def m_tensor_bytes(folder: Path, rng: random.Random) -> str:
    name = rng.choice(WEIGHTS)
    data = bytearray((folder / name).read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    kind = rng.choice(["header_len", "truncate", "flip_header", "flip_data", "zero"])
    if kind == "header_len":
        data[:8] = struct.pack("<Q", rng.choice([0, 1, n + 1, 50 << 20, 1 << 40, 2**64 - 1]))
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "flip_header":
        data[8 + rng.randrange(n)] = rng.randrange(256)
    elif kind == "flip_data":
        data[8 + n + rng.randrange(len(data) - 8 - n)] ^= 1 << rng.randrange(8)
    else:
        data = bytearray()
    _replace_raw(folder, name, bytes(data))
    return f"{name.split('.')[0]}:{kind}"


def big_header(folder: Path, tensors: int = 900_000) -> None:
    """The issue's file: a valid safetensors header of many empty tensors (~61 MB at 900k)."""
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(tensors)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    _replace_raw(folder, "control.safetensors", struct.pack("<Q", len(raw)) + raw)


# -- file system -----------------------------------------------------------------------------
OUTSIDE = ["/etc/shadow", "/etc/passwd", "/nonexistent/file", "/proc/self/environ", "/dev/zero", "..", "/"]


def m_filesystem(folder: Path, rng: random.Random) -> str:
    name = rng.choice(FILES)
    path = folder / name
    kind = rng.choice(["link_out", "link_out_rel", "link_in", "link_dangling", "fifo", "dir", "missing",
                       "link_loop", "dev_zero"])
    if kind == "link_out":
        path.unlink()
        path.symlink_to(rng.choice(OUTSIDE))
    elif kind == "link_out_rel":
        outside = folder.parent / f"{folder.name}.outside.{name}"
        shutil.copy(path, outside)
        path.unlink()
        path.symlink_to(Path("..") / outside.name)
    elif kind == "link_in":  # allowed: the file is still inside the folder
        (folder / "sub").mkdir(exist_ok=True)
        path.rename(folder / "sub" / name)
        path.symlink_to(Path("sub") / name)
    elif kind == "link_dangling":
        path.unlink()
        path.symlink_to("sub/none")
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "dir":
        path.unlink()
        path.mkdir()
    elif kind == "missing":
        path.unlink()
    elif kind == "link_loop":
        path.unlink()
        path.symlink_to(name)
    else:
        path.unlink()
        path.symlink_to("/dev/zero")
    return f"{name}:{kind}"


KINDS = {
    "yaml_hostile": m_yaml_hostile, "yaml_value": m_yaml_value, "yaml_bytes": m_yaml_bytes,
    "manifest": m_manifest, "tensors": m_tensors, "tensor_bytes": m_tensor_bytes, "filesystem": m_filesystem,
}
# Hash refresh: the manifest matches every edit except where the manifest itself is the target.
KEEP_MANIFEST = {"manifest"}


@dataclass
class Result:
    index: int
    kind: str
    detail: str
    outcome: str  # ok | <ErrorType>:<message without paths and numbers> | HANG | CRASH:<type>
    message: str
    seconds: float
    peak_mb: float = 0.0  # this load's own peak resident memory
    rise_mb: float = 0.0  # that peak's rise over the resident size before the load

    @property
    def failure(self) -> bool:
        return self.outcome.startswith(("HANG", "CRASH")) or "\n" in self.message or "Traceback" in self.message


# Outcome classes for the table: the first phrase a message holds (else the message, normalized).
PHRASES = [
    "anchors and aliases", "is not allowed", "could not determine a constructor", "nested deeper than",
    "not valid YAML", "not UTF-8", "unknown key", "Input should be", "top level must be a mapping",
    "link out of the folder", "missing or unreadable", "over the limit of", "not a readable safetensors file",
    "unknown tensor", "the model config needs", "non-finite", "coding tables", "scale table", "missing keys",
    "control weights do not match", "control weight", "weights do not fit", "contents do not match",
    "not valid JSON", "not a ResULIC trained-codec manifest", "folder version", "no 'files' mapping",
    "fingerprint", "Unable to parse", "stride is fixed", "Field required", "exceeds residual_steps", "sum to",
    "needs at least",
]


def normalize(message: str, folder: Path) -> str:
    for phrase in PHRASES:
        if phrase in message:
            return phrase
    message = message.replace(str(folder), "<folder>")
    message = re.sub(r"'[^']*'|\([^)]*\)|\[[^\]]*\]", "", message)
    message = re.sub(r"[0-9][0-9,._x]*", "", message)
    return " ".join(message.split())[:90]


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def load_one(folder: Path, backbone, timeout_s: float) -> tuple[str, str]:
    from resulic.codec.store import load_codec
    from resulic.errors import ResulicError

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        load_codec(folder, backbone=backbone)
        return "ok", ""
    except ResulicError as exc:
        return f"{type(exc).__name__}:{normalize(str(exc), folder)}", str(exc)
    except _Timeout:
        return "HANG", f"no answer within {timeout_s} s"
    except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
        return f"CRASH:{type(exc).__name__}", f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def cdf_tables_of(codec) -> dict:
    from resulic.codec.store import CDF_BUFFERS

    return {k: v.clone() for k, v in codec.compressor.state_dict().items() if k.rpartition(".")[2] in CDF_BUFFERS}


def run(base: Path, count: int, seed: int, backbone, cdf_tables: dict, timeout_s: float = 60.0,
        work: Path | None = None, progress: bool = False) -> list[Result]:
    from resulic.services.memory import peak_mb, reset_peak, resident_mb

    rng = random.Random(seed)
    work = Path(work or tempfile.mkdtemp(prefix="fuzz-folders-"))
    names = sorted(KINDS)
    results = []
    for i in range(count):
        kind = names[i % len(names)]
        folder = work / f"f{i}"
        shutil.copytree(base, folder, symlinks=True)
        mutate = KINDS[kind]
        detail = mutate(folder, rng, cdf_tables) if kind == "tensors" else mutate(folder, rng)
        if kind not in KEEP_MANIFEST and (folder / "manifest.json").is_file() and not (folder / "manifest.json").is_symlink():
            refresh_manifest(folder)
        reset_peak()
        before = resident_mb()
        t0 = time.perf_counter()
        outcome, message = load_one(folder, backbone, timeout_s)
        seconds, peak = time.perf_counter() - t0, peak_mb()
        results.append(Result(i, kind, detail, outcome, message, seconds, peak, peak - before))
        shutil.rmtree(folder, ignore_errors=True)
        for extra in work.glob(f"f{i}.outside.*"):
            extra.unlink()
        if progress and (i + 1) % 100 == 0:
            print(f"[fuzz-folders] {i + 1}/{count}", file=sys.stderr, flush=True)
    return results


def table(results: list[Result]) -> str:
    kinds = sorted({r.kind for r in results})
    counts = collections.Counter((r.outcome, r.kind) for r in results)
    outcomes = sorted({r.outcome for r in results}, key=lambda o: -sum(counts[(o, k)] for k in kinds))
    lines = ["| outcome | " + " | ".join(kinds) + " | total |", "|---" * (len(kinds) + 2) + "|"]
    for o in outcomes:
        row = [counts[(o, k)] for k in kinds]
        lines.append(f"| {o} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    totals = [sum(1 for r in results if r.kind == k) for k in kinds]
    lines.append("| **total** | " + " | ".join(map(str, totals)) + f" | {len(results)} |")
    rows = (("worst s", "seconds", "{:.2f}"), ("peak MB", "peak_mb", "{:.0f}"),
            ("rise MB (over the resident size before)", "rise_mb", "{:+.0f}"))
    for label, field, fmt in rows:
        worst = [max((getattr(r, field) for r in results if r.kind == k), default=0.0) for k in kinds]
        lines.append(f"| {label} | " + " | ".join(fmt.format(w) for w in worst) + f" | {fmt.format(max(worst))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--issue-header", action="store_true", help="also the issue's 900k-tensor header")
    args = p.parse_args(argv)
    from resulic.codec import Codec
    from resulic.codec.store import save_codec
    from resulic.config import ModelConfig
    from resulic.services.memory import peak_mb, reset_peak, resident_mb

    codec = Codec.build(ModelConfig())
    work = Path(tempfile.mkdtemp(prefix="fuzz-folders-"))
    base = save_codec(codec, work / "base")
    t0 = time.perf_counter()
    results = run(base, args.count, args.seed, codec.backbone, cdf_tables_of(codec), args.timeout, work, progress=True)
    if args.issue_header:
        folder = work / "issue"
        shutil.copytree(base, folder)
        big_header(folder)
        refresh_manifest(folder)
        reset_peak()
        before = resident_mb()
        t1 = time.perf_counter()
        outcome, message = load_one(folder, codec.backbone, args.timeout)
        seconds, peak = time.perf_counter() - t1, peak_mb()
        results.append(Result(len(results), "issue25", "900k tensors", outcome, message, seconds, peak, peak - before))
    print(table(results))
    issue = [r for r in results if r.kind == "issue25"]
    if issue:
        print(f"\nthe issue's 900k-tensor header: {issue[0].outcome} in {issue[0].seconds:.2f} s")
    rss = max(r.peak_mb for r in results)
    failures = [r for r in results if r.failure]
    print(f"\n{len(results)} folders, {time.perf_counter() - t0:.0f} s, peak RSS {rss:.0f} MB, "
          f"{len(failures)} failures")
    for r in failures[:20]:
        print(f"FAIL #{r.index} {r.kind} {r.detail}: {r.outcome}: {r.message[:300]!r}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
