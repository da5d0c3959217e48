"""How steady is this machine's latency? Time one subnet back to back for a while and report slow spells.

    flock /tmp/hwnas-bench.lock python tools/bench_noise.py --profile cpu-ort-1t --seconds 30

One subnet of the space (the largest by default) is prepared on the profile's backend and timed
in consecutive windows of `--window` calls (a window lasts ~50 ms for a small subnet). Each
window's median is compared with the run's fastest-decile window median: a window more than
`--slow` slower belongs to a slow spell. Reports the share of slow windows, the spells'
lengths in seconds and how slow they were. This is what a latency protocol has to survive:
a measurement shorter than a spell, taken once, can be wholly inside one. The thread's CPU time
per call is taken over each window as well: if it moves with the wall time, the slow spells are
the CPU running slower (a busy host), not this process waiting for it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-ort-1t")
    ap.add_argument("--space", default="mbv3-small-input")
    ap.add_argument("--arch", default="largest", choices=("largest", "smallest"))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--window", type=int, default=300, help="calls per window")
    ap.add_argument("--slow", type=float, default=0.10, help="a window this much slower than the fast decile is slow")
    ap.add_argument("--out", default=None, help="write the windows and the summary as JSON here")
    args = ap.parse_args()

    from hwnas.device_profile import load_profile
    from hwnas.runtime.backends import get_backend
    from hwnas.space import get_space

    profile = load_profile(args.profile)
    space = get_space(args.space)
    arch = space.largest() if args.arch == "largest" else space.smallest()
    with get_backend(profile).prepare(space.build(arch), (profile.batch, *space.input_shape(arch))) as runner:
        runner.warmup(max(profile.protocol.warmup, 100))
        t0 = time.perf_counter()
        windows: list[tuple[float, float]] = []
        wall_mean, cpu_mean = [], []
        while time.perf_counter() - t0 < args.seconds:
            start = time.perf_counter() - t0
            cpu0 = time.thread_time()
            calls = runner.time(args.window)
            cpu_mean.append((time.thread_time() - cpu0) * 1e3 / args.window)
            wall_mean.append(float(np.mean(calls)))
            windows.append((start, float(np.median(calls))))
    starts = np.array([w[0] for w in windows])
    medians = np.array([w[1] for w in windows])
    base = float(np.quantile(medians, 0.10))
    slow = medians > base * (1 + args.slow)
    spells: list[dict[str, float]] = []
    i = 0
    while i < len(slow):
        if slow[i]:
            j = i
            while j + 1 < len(slow) and slow[j + 1]:
                j += 1
            end = starts[j + 1] if j + 1 < len(starts) else time.perf_counter() - t0
            spells.append({"start_s": round(float(starts[i]), 2), "seconds": round(float(end - starts[i]), 3),
                           "slowdown": round(float(medians[i:j + 1].max() / base - 1), 3)})
            i = j + 1
        else:
            i += 1
    lengths = np.array([s["seconds"] for s in spells]) if spells else np.zeros(1)
    summary = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "profile": profile.name, "space": args.space, "arch": args.arch,
        "windows": len(windows), "window_calls": args.window,
        "window_seconds": round(float(np.median(np.diff(starts))) if len(starts) > 1 else 0.0, 3),
        "fast_decile_ms": round(base, 4), "median_ms": round(float(np.median(medians)), 4),
        "slow_share": round(float(slow.mean()), 3), "spells": len(spells),
        "spell_seconds_median": round(float(np.median(lengths)), 3),
        "spell_seconds_max": round(float(lengths.max()), 3),
        "slowdown_max": round(float(medians.max() / base - 1), 3),
        "window_median_max_over_min": round(float(medians.max() / medians.min()), 3),
        # window means of wall time and of the thread's CPU time per call (the CPU time includes the timer)
        "cpu_time_vs_wall_correlation": round(float(np.corrcoef(wall_mean, cpu_mean)[0, 1]), 4)
        if len(windows) > 2 else None,
        "cpu_time_over_wall": round(float(np.sum(cpu_mean) / np.sum(wall_mean)), 4),
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        from hwnas.io import atomic_write_json

        atomic_write_json(args.out, {**summary, "spell_list": spells,
                                     "window_list": [[round(s, 3), round(m, 5)] for s, m in windows]})


if __name__ == "__main__":
    main()
