"""`hwnas validate`: a latency table's predictions against end-to-end measurements."""

from __future__ import annotations

import argparse

HELP = "measure random subnets end to end: table sum and calibrated predictor vs measured"
DESCRIPTION = """\
Build random subnets of the table's space, measure them whole on the table's backend with
the table's protocol (this must run on the device the table describes), fit the
calibration on CALIB-N of them and score the raw table sum and the calibrated predictor on
the other N: MAPE, share within +-10 %, Kendall tau. With --passes P the N subnets are
timed in P independent passes and scored against their geometric mean. With --retest the N
subnets are measured again and the two measurements scored against each other (the device's
ceiling).
Writes the calibration beside the table (T.calibration.json) and, with --plot, a
predicted-vs-measured scatter plot.

example:
  hwnas validate latency_tables/cpu-ort-1t_mbv3-small-input.json --n 50 --calib-n 30 \\
      --plot validate.png --json
"""

# library field -> the flag that sets it
FLAGS = {"table": "T.json", "n": "--n", "calib_n": "--calib-n", "plot": "--plot", "rounds": "--rounds",
         "passes": "--passes"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", metavar="T.json", help="latency table written by `hwnas profile`")
    parser.add_argument("--n", type=int, default=50, help="held-out subnets scored (default 50)")
    parser.add_argument("--calib-n", type=int, default=None, help="subnets the calibration is fitted on "
                        "(default: as many as --n)")
    parser.add_argument("--plot", default=None, help="write the predicted-vs-measured scatter plot here (PNG)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subnets (default 0)")
    parser.add_argument("--calibration-out", default=None,
                        help="where to write the calibration (default: beside the table)")
    parser.add_argument("--rounds", type=int, default=2, help="timing passes over all subnets (default 2); each "
                        "keeps its lowest round median, or the median of its rounds for a table timed in anchor "
                        "brackets. A round's scatter falls with more of them: `tools/bench_rounds.py` measures how far")
    parser.add_argument("--passes", type=int, default=1, help="time the held-out subnets in this many "
                        "independent passes, sessions compiled afresh for each, and score against the geometric "
                        "mean: part of a pass's error stays with its sessions whatever the rounds (default 1)")
    parser.add_argument("--retest", action="store_true", help="measure the held-out subnets a second time and "
                        "score the two measurements against each other: the repeatability that bounds any predictor")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace):
    from hwnas.pipeline import validate

    return validate(args.table, args.n, calib_n=args.calib_n, plot=args.plot, seed=args.seed,
                    calibration_out=args.calibration_out, rounds=args.rounds, retest=args.retest,
                    progress=not args.no_progress, passes=args.passes)

