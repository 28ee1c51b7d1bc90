"""Submit a platform job to a Ray cluster with `ray job submit` (see docs/cluster.md).

    python jobs/submit.py train    configs/train/stage1-sd21.yaml --storage s3://my-bucket/resulic/ray_results
    python jobs/submit.py sweep    configs/sweep/sd21.yaml --storage s3://my-bucket/resulic/ray_results
    python jobs/submit.py promote  configs/promote/sd21.yaml
    python jobs/submit.py evaluate configs/evaluate-sd21.yaml
      [--address URL] [--tracking-uri URI] [--storage PATH] [--shared-path DIR] [--attempt N] [--wait] [--dry-run]

The config is validated here, and a training's data.source must be readable by every node: a URI,
'samples', a path under /shared (or a --shared-path), or a file uploaded with the working folder
(not git-ignored). The command is printed, then run (--dry-run only prints it).
Then the job's status, how to see its logs and, with --wait, the MLflow runs it made; the exit
status is 0 only for a job that succeeded (--wait) or was accepted (without).
Defaults: --address $RAY_ADDRESS or http://127.0.0.1:8265 (what `ray dashboard cluster.yaml`
forwards), --tracking-uri $RESULIC_TRACKING_URI (else the cluster's own), --storage
$RESULIC_STORAGE_PATH (else the config's; required for the *-sd21.yaml configs, which leave the
bucket to it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys


def main(argv=None) -> int:
    from resulic.cli.submit import KINDS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=list(KINDS), help="which job")
    parser.add_argument("config", help="the job's YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, passed on to the job (repeatable)")
    parser.add_argument("--address", help="the cluster's job API (default: $RAY_ADDRESS or http://127.0.0.1:8265)")
    parser.add_argument("--tracking-uri", help="MLflow server for the job (default: $RESULIC_TRACKING_URI, else the cluster's)")
    parser.add_argument("--storage", help="storage path for checkpoints, e.g. s3://bucket/resulic/ray_results")
    parser.add_argument("--shared-path", dest="shared_paths", action="append", default=[], metavar="DIR",
                        help="a folder every node mounts at this same path: a data.source under it is accepted "
                             "(/shared, the clusters' own mount, always is; repeatable)")
    parser.add_argument("--attempt", type=int, default=1, help="resubmit the same job: a new submission id (default 1)")
    parser.add_argument("--wait", action="store_true", help="follow the job's logs until it ends")
    parser.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    args = parser.parse_args(argv)

    from resulic.errors import ResulicError
    from resulic.cli.submit import build_command, format_command, job_report, request_from_env, submission_id, submit_environment

    try:
        request = request_from_env(
            args.kind, args.config, args.overrides, address=args.address, tracking_uri=args.tracking_uri,
            storage=args.storage, attempt=args.attempt, wait=args.wait, shared_paths=args.shared_paths,
        )
        command = build_command(request)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_command(command), flush=True)
    if args.dry_run:
        return 0
    ray = shutil.which("ray")
    if ray is None:
        print("error: the `ray` command is not on PATH (activate the project's .venv)", file=sys.stderr)
        return 2
    env = submit_environment()
    code = subprocess.call([ray, *command[1:]], env=env)
    os.environ.update(env)  # the same authentication for the status query below
    sid = submission_id(request)
    try:
        report = job_report(request.address, sid)
    except Exception as exc:  # the job API is unreachable or refused the job: ray's own message is above
        print(f"job {sid}: no status from {request.address} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
              file=sys.stderr)
        return code or 1
    print("\n".join(report.lines(request.address, request.tracking_uri)), flush=True)
    if request.wait:
        return 0 if report.status == "SUCCEEDED" else 1
    return code


if __name__ == "__main__":
    sys.exit(main())
