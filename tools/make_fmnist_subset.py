"""Make the stratified Fashion-MNIST subset that hwnas ships (run once; output is committed).

    python tools/make_fmnist_subset.py [--src /usr/share/datasets/fashion-mnist]

Source: Debian's dataset-fashion-mnist (Zalando's Fashion-MNIST, MIT licence; the notice
travels with the file in hwnas/data/LICENSE-fashion-mnist.txt).
"""

from __future__ import annotations

import argparse

import numpy as np

from hwnas.data.datasets import DEBIAN_FMNIST_DIR, SUBSET_FILE, load_fashion_mnist, stratified_subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(DEBIAN_FMNIST_DIR))
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(SUBSET_FILE))
    args = ap.parse_args()
    full = load_fashion_mnist(args.src)
    tr = stratified_subset(full.train_y.numpy(), args.train_per_class, args.seed)
    te = stratified_subset(full.test_y.numpy(), args.test_per_class, args.seed + 1)
    np.savez_compressed(
        args.out,
        train_x=full.train_x[tr, 0].numpy(),
        train_y=full.train_y[tr].numpy().astype(np.uint8),
        test_x=full.test_x[te, 0].numpy(),
        test_y=full.test_y[te].numpy().astype(np.uint8),
    )
    print(f"wrote {args.out}: {len(tr)} train, {len(te)} test images")


if __name__ == "__main__":
    main()
