"""How far a machine's speed drifts while whole subnets are timed, and whether an anchor network cancels it.

    python tools/bench_drift.py cpu-ort-1t --n 50

N random subnets of the space and the anchor subnet (hwnas.latency.anchor) are built for the
profile's backend. In each of two passes every subnet is timed three ways with the profile's
protocol (without its own anchor setting): alone; divided by the mean of two timings of the
anchor just before and after it; and anchored per call (each call followed by a call of the anchor,
as `protocol.anchor: true` times). The passes use freshly built sessions. Reported: how well the
two passes agree (Kendall tau, share within +-10 %) for each way, the anchor's spread within a
pass and its median in each pass. If the per-call ratios agree much better than the raw medians,
the machine's speed changes faster than one measurement lasts, and anchored timing cancels it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's hwnas, whatever is installed

from hwnas.device_profile import load_profile  # noqa: E402
from hwnas.errors import InputError  # noqa: E402
from hwnas.latency.anchor import AnchoredRunner, anchor_arch  # noqa: E402
from hwnas.latency.validate import sample_distinct  # noqa: E402
from hwnas.runtime.backends import get_backend  # noqa: E402
from hwnas.runtime.measure import measure  # noqa: E402
from hwnas.space import get_space  # noqa: E402
from hwnas.stats import kendall_tau  # noqa: E402


def one_pass(backend, profile, space, archs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subnet medians, mean of the anchor medians around each, per-call ratios to the anchor); archs[0]
    is the anchor."""
    protocol = replace(profile.protocol, anchor=False)
    runners = [backend.prepare(space.build(a), (profile.batch, *space.input_shape(a))) for a in archs]
    try:
        anchor, raw, around, per_call = runners[0], [], [], []
        for runner in runners[1:]:
            before = measure(anchor, protocol).median_ms
            raw.append(measure(runner, protocol).median_ms)
            around.append((before + measure(anchor, protocol).median_ms) / 2)
            per_call.append(measure(AnchoredRunner(runner, anchor, 1.0), protocol).median_ms)
    finally:
        for runner in runners:
            runner.close()
    return np.array(raw), np.array(around), np.array(per_call)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    ratio = b / a
    return {"kendall_tau": round(kendall_tau(a, b), 4), "within_10pct": float(np.mean(np.abs(ratio - 1) < 0.1)),
            "ratio_p25_p50_p75": [round(float(v), 4) for v in np.percentile(ratio, [25, 50, 75])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile", help="device profile YAML or shipped name")
    p.add_argument("--space", default="mbv3-small-input")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the result JSON here")
    args = p.parse_args()
    if args.n < 2:
        p.error("--n must be at least 2")
    try:
        profile = load_profile(args.profile)
        space = get_space(args.space)
        backend = get_backend(profile)
        backend.check_available()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    archs = [anchor_arch(space)] + sample_distinct(space, args.n, np.random.default_rng(args.seed))
    started, load_start = time.perf_counter(), os.getloadavg()
    raw1, anchor1, call1 = one_pass(backend, profile, space, archs)
    raw2, anchor2, call2 = one_pass(backend, profile, space, archs)
    result = {
        "profile": profile.name, "space": space.name, "n": args.n,
        "raw": agreement(raw1, raw2),
        "relative_to_anchor": agreement(raw1 / anchor1, raw2 / anchor2),
        "anchored_per_call": agreement(call1, call2),
        "anchor_ms": {"median_pass1": round(float(np.median(anchor1)), 5),
                      "median_pass2": round(float(np.median(anchor2)), 5),
                      "cv_within_pass_pct": [round(float(100 * v.std() / v.mean()), 2) for v in (anchor1, anchor2)]},
        "subnet_ms": {"min": round(float(raw1.min()), 5), "median": round(float(np.median(raw1)), 5),
                      "max": round(float(raw1.max()), 5)},
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                 if ln.startswith("model name")), "?"), "cores": os.cpu_count(),
                    "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
