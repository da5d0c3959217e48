"""The streaming image-folder loader: memory against the number of images, and its cost in images/s.

    python tools/bench_loader.py make --n 2000 --out bench/folder-2k
    python tools/bench_loader.py make --n 20000 --out bench/folder-20k
    python tools/bench_loader.py memory --folder bench/folder-2k
    python tools/bench_loader.py memory --folder bench/folder-20k [--max-steps K]
    flock /work/timing.lock python tools/bench_loader.py throughput --folder bench/folder-2k --steps 24

`make` writes an image folder (DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg) of the full
Fashion-MNIST's first N training images in a seeded order (and 500 test images), each upscaled
(bicubic) to a random size of 160-256 px per side, tinted with a random colour (a three-channel
JPEG, quality 90).

`memory` runs `hwnas.train.train` in a child process for one epoch of `mbv3` at resolutions
128-160 on the folder (2 loader workers, every training image in the epoch's sampler, no validation
hold-out) and samples every 0.2 s the proportional set size (PSS: shared pages split between the
processes sharing them) and the RSS of the child and its loader workers together; it reports the
peaks of those sums, and the child's own peak RSS. `--max-steps K` trains K steps and then passes the rest of the
epoch's batches through the loader without a network step (the loader still opens, decodes and
augments every image of the epoch). `--loader-only` measures the same way a child that only passes
one epoch's batches through the loader (2 workers, no network): the loader's own memory.

`throughput` trains `mbv3` (sandwich rule: largest, smallest, one random subnet) on the same batches
`--rounds` times each: decoded beforehand and held as tensors, and through the loader with 2 worker
processes, alternated (pre-decoded, loader, pre-decoded, loader, ...); it reports images/s of each
round, of each way over all rounds, and their ratio; and the CPU time per image (this process's
threads and the loader's worker processes), which the load of other processes on the machine
changes far less than the wall-clock rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

RESOLUTIONS = [128, 144, 160]
SIZE_RANGE = (160, 256)
TEST_IMAGES = 500


def machine(started: dict | None = None) -> dict:
    """The machine, and its load and the date now (at the end of a run) and, with `started`, at its start."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    now = {"load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "end": now, **({"start": started} if started else {})}


def moment() -> dict:
    return {"load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def make_folder(out: Path, n: int, seed: int) -> dict:
    from PIL import Image

    from hwnas.data.datasets import DEBIAN_FMNIST_DIR, FMNIST_CLASSES, load_fashion_mnist

    full = load_fashion_mnist(DEBIAN_FMNIST_DIR)
    rng = np.random.default_rng(seed)
    names = [f"{i}-{c.replace('/', '-').replace(' ', '-')}" for i, c in enumerate(FMNIST_CLASSES)]
    t0 = time.perf_counter()
    written = 0
    for split, x, y, count in (("train", full.train_x, full.train_y, n), ("test", full.test_x, full.test_y,
                                                                         TEST_IMAGES)):
        for name in names:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(rng.permutation(len(y))[:count]):
            w, h = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
            grey = x[i, 0].numpy().astype(np.float32) / 255.0
            tint = rng.uniform(0.4, 1.0, size=3)
            rgb = (grey[..., None] * tint * 255).astype(np.uint8)
            image = Image.fromarray(rgb, "RGB").resize((w, h), Image.BICUBIC)
            image.save(out / split / names[int(y[i])] / f"{k:06d}.jpg", quality=90)
            written += 1
    size = sum(f.stat().st_size for f in out.rglob("*.jpg"))
    return {"folder": str(out), "train_images": n, "test_images": TEST_IMAGES, "bytes": size,
            "seconds": round(time.perf_counter() - t0, 1)}


def bench_settings(folder: Path, **overrides):
    from hwnas.train import TrainSettings

    return TrainSettings(**{"space": "mbv3", "space_options": {"resolutions": RESOLUTIONS}, "data": f"folder:{folder}",
                            "epochs": 1, "batch_size": 32, "num_random": 1, "val_size": 0, "num_workers": 2,
                            "recal_batches": 4, "recal_batch_size": 64, "eval_batch_size": 100, **overrides})


def memory_child(folder: Path, out: Path, max_steps: int | None) -> None:
    """One epoch in this process (the parent samples its memory); prints a JSON summary."""
    import resource

    from hwnas.train import trainer

    if max_steps is not None:  # train K steps, then only load the rest of the epoch's batches
        real, calls = trainer.sandwich_step, [0]

        def capped(*args, **kwargs):
            calls[0] += 1
            if calls[0] > max_steps:
                return {"loss": float("nan"), "loss_largest": float("nan")}
            return real(*args, **kwargs)

        trainer.sandwich_step = capped
    t0 = time.perf_counter()
    result = trainer.train(bench_settings(folder), out, overwrite=True, device="cpu", progress=False)
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "steps": result["steps"],
                      "skipped_images": result["skipped_images"], "curve": result["curve"],
                      "max_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "max_rss_any_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def loader_child(folder: Path) -> None:
    """One epoch's batches through the loader (2 workers) and nothing else; prints a JSON summary."""
    import resource

    from hwnas.data import open_dataset
    from hwnas.data.stream import EpochBatches, make_loader, training_images

    settings = bench_settings(folder)
    t0 = time.perf_counter()
    images = training_images(open_dataset(settings.data), augment=True)
    sampler = EpochBatches(len(images), settings.batch_size, epoch=0, seed=0, resolutions=RESOLUTIONS)
    n = sum(len(b.y) for b in make_loader(images, sampler, num_workers=settings.num_workers))
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "images": n,
                      "max_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "max_rss_any_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over `pid` and all its descendants, in MB (processes gone meanwhile count 0)."""
    rss = pss = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
            for task in os.listdir(f"/proc/{p}/task"):
                stack.extend(int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, pss


def memory(folder: Path, max_steps: int | None, loader_only: bool = False) -> dict:
    out = folder.parent / f"{folder.name}.pt"
    cmd = [sys.executable, __file__, "_memory-child", "--folder", str(folder), "--out", str(out)]
    if loader_only:
        cmd = [sys.executable, __file__, "_loader-child", "--folder", str(folder)]
    elif max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    started = moment()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, samples, stop = [0.0, 0.0], [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[:] = np.maximum(peak, tree_memory_mb(child.pid)).tolist()
            samples[0] += 1
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = child.communicate()
    stop.set()
    thread.join()
    if child.returncode != 0:
        raise SystemExit(f"training child failed ({child.returncode})")
    n = sum(1 for _ in (folder / "train").rglob("*.jpg"))
    return {"folder": str(folder), "train_images": n, "loader_only": loader_only, "max_steps": max_steps,
            "peak_rss_tree_mb": round(peak[0], 1),
            "peak_pss_tree_mb": round(peak[1], 1),
            "pss_samples": samples[0], **json.loads(stdout.strip().splitlines()[-1]), "machine": machine(started)}


def throughput(folder: Path, steps: int, workers: int, seed: int, n_rounds: int, batch_size: int) -> dict:
    from hwnas.data import open_dataset
    from hwnas.data.stream import EpochBatches, make_loader, normalize, training_images
    from hwnas.space import get_space
    from hwnas.supernet import build_supernet
    from hwnas.train.trainer import make_optimizer, preferred_memory_format, sandwich_archs, sandwich_step

    started = moment()
    settings = bench_settings(folder, batch_size=batch_size)
    data = open_dataset(settings.data, seed=seed)
    images = training_images(data, augment=True)
    space = get_space("mbv3", resolutions=RESOLUTIONS, num_classes=data.num_classes, in_channels=3)
    fmt = preferred_memory_format(torch.device("cpu"))
    supernet = build_supernet(space).to(memory_format=fmt)
    optimizer = make_optimizer(supernet, settings)
    sampler = EpochBatches(len(images), settings.batch_size, epoch=0, seed=seed, resolutions=RESOLUTIONS)
    plans = [sampler.plan(k) for k in range(steps)]
    predecoded = [images.__getitems__(p) for p in plans]

    cpu_ms: dict[str, list[float]] = {"predecoded": [], "loader": []}

    def run(batches, way: str | None = None) -> float:
        import resource

        rng = np.random.default_rng(seed)
        n, t0 = 0, time.perf_counter()
        c0 = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        for batch in batches:
            archs = [{**a, "r": batch.resolution} for a in sandwich_archs(space, rng, settings.num_random)]
            sandwich_step(supernet, optimizer, normalize(batch.x, data.mean, data.std), batch.y, archs,
                          memory_format=fmt)
            n += len(batch.y)
        seconds = time.perf_counter() - t0
        del batches  # a loader's workers exit here, and their CPU time joins RUSAGE_CHILDREN
        import gc

        gc.collect()
        if way is not None:  # CPU time of this process and of the workers, per image
            c1 = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
            cpu_ms[way].append(round(1000 * (c1 - c0) / n, 1))
        return n / seconds

    run(predecoded[:2])  # warm-up (oneDNN primitives for each resolution)
    rounds = {"predecoded": [], "loader": []}
    for _ in range(n_rounds):  # alternated, so a change in the machine's load falls on both
        rounds["predecoded"].append(run(predecoded, "predecoded"))
        rounds["loader"].append(run(make_loader(images, plans, num_workers=workers), "loader"))
    # images/s over all rounds: every round has the same images, so the harmonic mean of the rates
    pre, live = (len(r) / sum(1 / v for v in r) for r in (rounds["predecoded"], rounds["loader"]))
    return {"folder": str(folder), "steps": steps, "rounds": n_rounds, "batch_size": settings.batch_size,
            "workers": workers,
            "torch_threads": torch.get_num_threads(), "images_per_s": {k: [round(v, 2) for v in r]
                                                                       for k, r in rounds.items()},
            "predecoded_mean": round(pre, 2), "loader_mean": round(live, 2), "ratio": round(live / pre, 3),
            "cpu_ms_per_image": cpu_ms,
            "cpu_ratio": round(float(np.mean(cpu_ms["predecoded"]) / np.mean(cpu_ms["loader"])), 3),
            "machine": machine(started)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("make", "memory", "throughput", "_memory-child", "_loader-child"))
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--out", type=Path)
    p.add_argument("--folder", type=Path)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--loader-only", action="store_true", help="memory: the epoch's batches through the loader only")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the training process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.stage == "make":
        result = {**make_folder(args.out, args.n, args.seed), "machine": machine()}
    elif args.stage == "_memory-child":
        memory_child(args.folder, args.out, args.max_steps)
        return
    elif args.stage == "_loader-child":
        loader_child(args.folder)
        return
    elif args.stage == "memory":
        result = memory(args.folder, args.max_steps, args.loader_only)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = throughput(args.folder, args.steps, args.workers, args.seed, args.rounds, args.batch_size)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
