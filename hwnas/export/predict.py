"""Classify images with this bundle: `python predict.py IMAGE... [--tvm] [--top-k K]`.

Needs onnxruntime, numpy and Pillow only (`pip install onnxruntime pillow numpy`); `--tvm` runs the
bundle's compiled TVM library instead, where the TVM runtime is installed (`pip install apache-tvm`).
Everything it needs to know is in manifest.json beside it: the model's input (colour mode, size,
uint8 NCHW; scaling, standardisation and the resize to the network's resolution happen inside the
graph) and its output (logits, class names).

Each image gives one line: the path as given, the class index, the class name and its softmax
probability, separated by tabs; with --top-k K, K index/name/probability triples. An image that
cannot be read is reported on stderr and the exit status is 2; the other images are still classified.

This file is written by hwnas into every bundle and imports nothing of hwnas.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def fail(message: str) -> SystemExit:
    """Exit status 2 with a one-line message (bad input: the bundle, a flag, the runtime asked for)."""
    print(f"predict.py: {message}", file=sys.stderr)
    return SystemExit(2)


def load_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
        manifest["input"]["size"], manifest["output"]["class_names"]  # noqa: B018 - the fields this script needs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(f"{path}: not a bundle manifest with 'input' and 'output' sections ({exc})") from None
    return manifest


def read_image(path: str, contract: dict) -> np.ndarray:
    """The image as the model takes it: decoded, in the contract's colour mode and size, uint8 C x H x W."""
    from PIL import Image

    h, w = contract["size"]["height"], contract["size"]["width"]
    with Image.open(path) as im:
        im = im.convert(contract["colour_mode"])
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)  # as the training images were, when they were not w x h
        x = np.asarray(im, dtype=np.uint8)
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)


class OnnxModel:
    def __init__(self, bundle: Path, manifest: dict):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(bundle / manifest["files"]["onnx"]["path"]),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TvmModel:
    def __init__(self, bundle: Path, manifest: dict):
        try:
            import tvm
            from tvm import relax
        except ImportError as exc:
            raise fail(f"--tvm needs the TVM runtime (pip install apache-tvm): {exc}") from None
        entry = manifest["files"].get("tvm_so")
        if entry is None:
            raise fail("this bundle has no TVM library for this machine (model.so); run it without --tvm, or on "
                       "the device its model.tar was built for")
        self.tvm, self.device = tvm, tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle / entry["path"])), self.device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.vm["main"](self.tvm.runtime.tensor(np.ascontiguousarray(x), self.device))
        return (out if hasattr(out, "numpy") else out[0]).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--tvm", action="store_true", help="run the compiled TVM library (model.so)")
    parser.add_argument("--top-k", type=int, default=1, metavar="K", help="classes per image (default 1)")
    parser.add_argument("--manifest", type=Path, default=HERE / "manifest.json", help="the bundle's manifest")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    names = manifest["output"]["class_names"]
    if not 1 <= args.top_k <= len(names):
        parser.error(f"--top-k: expected 1 to {len(names)}, got {args.top_k}")
    model = (TvmModel if args.tvm else OnnxModel)(args.manifest.parent, manifest)
    batch = manifest["input"]["shape"][0]
    batch = batch if isinstance(batch, int) else 1  # "N": a dynamic batch takes one image as well
    failed = 0
    for path in args.images:
        try:
            x = read_image(path, manifest["input"])
        except (OSError, ValueError) as exc:
            print(f"predict.py: {path}: cannot read the image ({exc})", file=sys.stderr)
            failed += 1
            continue
        # a model built for a fixed batch > 1 takes copies of the image; the first row is its answer
        probs = softmax(model(np.repeat(x[None], batch, axis=0)).astype(np.float64))[0]
        top = np.argsort(-probs, kind="stable")[: args.top_k]
        print("\t".join([path, *(f"{i}\t{names[i]}\t{probs[i]:.4f}" for i in top)]), flush=True)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
