"""`hwnas profile`: measure every op of a search space on a device into a latency table."""

from __future__ import annotations

import argparse

HELP = "measure every op of a search space on a device profile into a latency table"
DESCRIPTION = """\
Measure every op key of a search space (at the profile's resolutions and batch) with the
profile's backend and measurement protocol (protocol.rounds passes over all ops, each op
keeping its least-disturbed pass), and write a latency table with its provenance (device
fingerprint, library versions, protocol, system load). The table is saved after every op:
an interrupted run is continued with --resume, without re-measuring what it holds.

example:
  hwnas profile device_profiles/cpu-ort-1t.yaml --space mbv3-small-input
  hwnas profile cpu-ort-all --space mbv3-small-input --out latency_tables/mine.json --resume --json
"""

# library field -> the flag that sets it
FLAGS = {"device_profile": "PROFILE", "space": "--space", "out": "--out", "resume": "--resume", "limit": "--limit"}


def configure(parser: argparse.ArgumentParser) -> None:
    from hwnas.device_profile import PROFILE_DIR
    from hwnas.runtime.backends import backend_names
    from hwnas.space import space_names

    shipped = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
    parser.add_argument("device_profile", metavar="PROFILE",
                        help=f"device profile YAML (backend: {', '.join(backend_names())}), or the name of a "
                             f"shipped one ({shipped})")
    parser.add_argument("--space", required=True,
                        help=f"search space: {', '.join(space_names())}, or a spec file (YAML)")
    parser.add_argument("--out", default=None,
                        help="table to write (default: latency_tables/<profile>_<space>.json)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing partial table; measured op keys are kept")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table at --out")
    parser.add_argument("--quick", action="store_true",
                        help="reduced protocol for smoke tests: one round, 3 warm-up runs, 10-100 timed runs, "
                        "<= 0.1 s per op, 5%% CI target, at most one re-measurement")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    # measure only the first N op keys (tests and interrupted-run demonstrations)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace):
    from hwnas.pipeline import profile

    return profile(args.device_profile, args.space, args.out, resume=args.resume, overwrite=args.overwrite,
                   quick=args.quick, limit=args.limit, progress=not args.no_progress)

