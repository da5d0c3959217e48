"""`hwnas export`: build the deployable bundle of a chosen subnet."""

from __future__ import annotations

import argparse

HELP = "export a subnet as a deployable bundle (ONNX, TVM library, TensorRT engine, manifest)"
DESCRIPTION = """\
Export the subnet picked from a search run (or given directly) as a bundle in D/:
model.onnx (opset 17, BN folded, checked against torch with ONNX Runtime), model.so
(TVM Relax library for the target; plus model.tar for a cross target), model.engine
(TensorRT, where tensorrt and a GPU exist) and manifest.json (arch, space, accuracy
estimate, predicted and measured latency, parity, sha256s, versions). The latency is
measured on the exported artifacts with the profile's protocol (default cpu-ort-1t).
A format that cannot be produced here exits 2 and leaves no partial bundle.

examples:
  hwnas export runs/R/pareto.json --pick best-under-budget --format onnx,tvm --out deploy/D
  hwnas export runs/R/pareto.json --pick 3 --format onnx,tvm --profile rpc-aarch64-tvm --out deploy/arm
  hwnas export --arch '{"r": 128, "d": [2,2,2,2,2], "k": [...], "e": [...]}' \\
      --supernet runs/supernet.pt --space mbv3-small-input --out deploy/D
"""

# library field -> the flag that sets it
FLAGS = {"run": "R/pareto.json", "pick": "--pick", "arch": "--arch", "supernet": "--supernet", "space": "--space",
         "table": "--table", "formats": "--format", "out": "--out", "profile": "--profile", "target": "--target",
         "tune_trials": "--tune-trials"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None, metavar="R/pareto.json",
                        help="a search run's pareto.json (or give --arch)")
    parser.add_argument("--pick", default="best-under-budget", metavar="P",
                        help="best-under-budget (default), an index into the Pareto set, or an arch as JSON")
    parser.add_argument("--arch", default=None, metavar="JSON", help="export this architecture (no run needed)")
    parser.add_argument("--supernet", default=None, metavar="C.pt",
                        help="supernet checkpoint (default: the one the run records)")
    parser.add_argument("--space", default=None, metavar="S", help="space name or spec file, with --arch")
    parser.add_argument("--table", default=None, metavar="T.json",
                        help="latency table for the predicted latency, with --arch")
    parser.add_argument("--format", default="onnx,tvm", metavar="F",
                        help="comma-separated from onnx, tvm, tensorrt (default onnx,tvm)")
    parser.add_argument("--out", required=True, metavar="D/", help="bundle folder (created; replaced if a bundle)")
    parser.add_argument("--profile", default=None, metavar="PROFILE.yaml",
                        help="device profile: backend and protocol the bundle is timed with (default cpu-ort-1t)")
    parser.add_argument("--target", default=None, metavar="TARGET",
                        help="TVM target (default: the TVM profile's, else llvm), e.g. "
                             "'llvm -mtriple=aarch64-linux-gnu -mattr=+neon'")
    parser.add_argument("--tune-trials", type=int, default=0, metavar="N",
                        help="MetaSchedule tuning trials for the TVM library (default 0: untuned)")
    parser.add_argument("--dynamic-batch", action="store_true", help="ONNX with a symbolic batch axis")
    parser.add_argument("--untrained", action="store_true",
                        help="without a supernet checkpoint, export initialised weights (latency only)")
    parser.add_argument("--no-measure", action="store_true", help="skip the latency measurement")


def run(args: argparse.Namespace):
    from hwnas.pipeline import export

    return export(args.run, out=args.out, pick=args.pick, arch=args.arch, supernet=args.supernet, space=args.space,
                  table=args.table, formats=args.format, profile=args.profile, target=args.target,
                  tune_trials=args.tune_trials, dynamic_batch=args.dynamic_batch, untrained=args.untrained,
                  measure=not args.no_measure)
