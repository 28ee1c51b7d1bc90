"""Copy serve/config.cluster.yaml into the RayService's serveConfigV2 (deploy/k8s/rayservice.yaml),
so that KubeRay serves exactly what `serve deploy serve/config.cluster.yaml` serves — with one
change: the HTTP proxy listens on the pod's address (0.0.0.0 inside the pod), because KubeRay's
serve Service sends traffic to the pod IP, where a proxy bound to 127.0.0.1 refuses it. Only the
Kubernetes Services in front of the pod decide who reaches it.

    python deploy/k8s/sync_serve_config.py [--check]

``--check`` changes nothing and exits 1 when the two differ. Only the serveConfigV2 block of the
manifest is rewritten; the rest of the file (comments included) stays as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve" / "config.cluster.yaml"
MANIFEST = REPO / "deploy" / "k8s" / "rayservice.yaml"
# "  serveConfigV2: |" and the lines indented deeper than the key that follow it.
BLOCK = re.compile(r"^(?P<indent> *)serveConfigV2: \|\n(?P<body>(?:(?P=indent)  .*\n|\n)*)", re.MULTILINE)


def embedded(manifest_text: str) -> tuple[re.Match, str]:
    match = BLOCK.search(manifest_text)
    if match is None:
        raise SystemExit(f"{MANIFEST}: no 'serveConfigV2: |' block")
    cut = len(match["indent"]) + 2
    return match, "".join(line[cut:] + "\n" for line in match["body"].splitlines())


# http_options' host line of serve/config.cluster.yaml (its comment replaced along with it).
HOST_LINE = re.compile(r"^(?P<indent> +)host: .*$", re.MULTILINE)
POD_HOST = "host: 0.0.0.0            # the pod's address: KubeRay's serve Service reaches the proxy on the pod IP"


def for_kuberay(serve_text: str) -> str:
    """serve/config.cluster.yaml as a RayService runs it: the proxy on the pod's address."""
    return HOST_LINE.sub(lambda m: m["indent"] + POD_HOST, serve_text, count=1)


def synced(manifest_text: str, serve_text: str) -> str:
    serve_text = for_kuberay(serve_text)
    match, _ = embedded(manifest_text)
    pad = match["indent"] + "  "
    body = "".join((pad + line if line.strip() else "") + "\n" for line in serve_text.rstrip("\n").splitlines())
    return manifest_text[: match.start("body")] + body + manifest_text[match.end("body") :]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether they differ")
    args = parser.parse_args(argv)
    if not SERVE_CONFIG.is_file():
        print(f"error: {SERVE_CONFIG} not found", file=sys.stderr)
        return 2
    text = MANIFEST.read_text()
    new = synced(text, SERVE_CONFIG.read_text())
    if new == text:
        print(f"{MANIFEST.relative_to(REPO)}: serveConfigV2 is serve/config.cluster.yaml")
        return 0
    if args.check:
        print(f"{MANIFEST.relative_to(REPO)}: serveConfigV2 differs from serve/config.cluster.yaml", file=sys.stderr)
        return 1
    MANIFEST.write_text(new)
    print(f"{MANIFEST.relative_to(REPO)}: serveConfigV2 updated from serve/config.cluster.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
