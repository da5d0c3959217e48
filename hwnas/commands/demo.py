"""`hwnas demo`: the whole pipeline on the embedded default."""

from __future__ import annotations

import argparse

HELP = "the whole pipeline on the embedded default (profile, train, search, export)"
DESCRIPTION = """\
Profile this CPU with onnxruntime for the mbv3-small-input space or --space S (or reuse a table measured
on this machine), calibrate the latency predictor, train the supernet on the shipped
Fashion-MNIST subset (or resume the checkpoint made earlier), search under a budget (the
median predicted latency of random subnets unless --budget-ms is given), export the best
subnet under the budget to ONNX and TVM, measure it, and write D/report.md.

examples:
  hwnas demo --out hwnas-demo/
  hwnas demo --space resnet --out hwnas-demo-resnet/
  hwnas demo --space my-net.yaml --out hwnas-demo-mine/
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from hwnas.demo import add_arguments

    add_arguments(parser)


def run(args: argparse.Namespace):
    from hwnas.demo import demo, print_table

    result = demo(args.out, epochs=args.epochs, budget_ms=args.budget_ms, seed=args.seed, space=args.space,
                  overwrite=args.overwrite)
    print_table(result.to_dict())
    return result
