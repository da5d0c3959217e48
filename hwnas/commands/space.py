"""`hwnas space show SPEC`: what a search space holds."""

from __future__ import annotations

import argparse

HELP = "describe a search space (a name or a spec file): size, op keys, MACs and parameters"
DESCRIPTION = """\
Print a search space's number of subnets, its op keys per resolution (what profiling measures),
the MACs and parameters of its smallest and largest subnet, and those two subnets. SPEC is a
registered space's name or a spec file (YAML); a bad spec is refused with exit status 2 and a
message naming the file, the stage and the key.

examples:
  hwnas space show resnet
  hwnas space show my-net.yaml --json
"""

FLAGS = {"space": "SPEC"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"], help="show: describe the space")
    parser.add_argument("space", metavar="SPEC", help="a space's name or a spec file (YAML)")
    parser.add_argument("--keys", action="store_true", help="list every op key (text output)")


def run(args: argparse.Namespace):
    import sys

    from hwnas.space.catalog import describe

    info = describe(args.space)
    if not args.json:  # the op-key lists are long: counts unless asked for
        for r, keys in info["op_keys_per_resolution"].items():
            where = "every input" if r == "None" else f"resolution {r}"  # a space without resolutions
            print(f"{where}: {len(keys)} op keys", file=sys.stderr)
            if args.keys:
                for key in keys:
                    print(f"  {key}", file=sys.stderr)
        info = {k: v for k, v in info.items() if k not in ("op_keys_per_resolution", "config")}
    return info
