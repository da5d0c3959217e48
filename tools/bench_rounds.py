"""How steady a whole-subnet timing is, and how much more rounds (or more sessions) steady it.

    python tools/bench_rounds.py latency_tables/cpu-ort-all_mbv3-small-input.json --n 60 --rounds 12

N random subnets of the table's space are built for the table's backend, SESSIONS times each
(separately compiled sessions of the same network), and every session is timed in ROUNDS passes
(order alternating) with the table's protocol, anchor included, as `hwnas validate` times them.
Reported:
- the scatter of one round's median around the subnet's (sd of the log, i.e. relative), and with
  two or more sessions how much of it stays with a session across rounds;
- for k = 1 .. ROUNDS/2: two disjoint random sets of k rounds, each subnet's median over each set,
  and how well the two agree (Kendall tau, mean of 200 draws): what k rounds in `validate` repeat to;
- with the table's calibration beside it, the calibrated prediction against the k-round medians.
The subnets are drawn from `--seed` (default 99, unlike validate's 0), so a shipped calibration
meets subnets it was not fitted on (unless the seeds coincide).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's hwnas, whatever is installed

from hwnas.device_profile import profile_from_dict  # noqa: E402
from hwnas.errors import InputError  # noqa: E402
from hwnas.latency.anchor import read_anchor  # noqa: E402
from hwnas.latency.fingerprint import cpu_model  # noqa: E402
from hwnas.latency.predictor import LatencyPredictor, calibration_path  # noqa: E402
from hwnas.latency.validate import sample_distinct, table_protocol, time_subnet_rounds  # noqa: E402
from hwnas.runtime.backends import get_backend  # noqa: E402
from hwnas.stats import kendall_tau  # noqa: E402


def time_rounds(table_path: str, archs: list[dict], sessions: int, rounds: int) -> np.ndarray:
    """Medians (ms), shape (subnets, sessions, rounds), timed as `hwnas validate` times them: every
    session compiled once, all timed in interleaved rounds (the first `rounds` of each are kept)."""
    predictor = LatencyPredictor.load(table_path)
    table, space = predictor.table, predictor.space
    profile = profile_from_dict(table.profile, source=table_path)
    get_backend(profile).check_available()
    medians, _ = time_subnet_rounds(profile, table_protocol(table), space, archs * sessions, rounds=rounds,
                                    progress=True, desc="rounds",
                                    anchor=read_anchor(table.protocol, space, table_path))
    ms = np.array([m[:rounds] for m in medians])  # (sessions * subnets, rounds), session-major
    return ms.reshape(sessions, len(archs), rounds).transpose(1, 0, 2)


def analyse(ms: np.ndarray, predicted: np.ndarray | None, draws: int = 200, seed: int = 0) -> dict:
    """Scatter of a round, session effect, and agreement of k-round medians (see the module doc)."""
    n, sessions, rounds = ms.shape
    logs = np.log(ms)
    within = logs - logs.mean(axis=2, keepdims=True)
    round_sd = float(within.std() * np.sqrt(rounds / (rounds - 1)))
    out: dict = {"round_sd_rel": round(round_sd, 5)}
    if sessions > 1:
        means = logs.mean(axis=2)
        between = float((means - means.mean(axis=1, keepdims=True)).std() * np.sqrt(sessions / (sessions - 1)))
        expected = round_sd / np.sqrt(rounds)  # what the rounds' scatter alone leaves in a session's mean
        out["session_means_sd_rel"] = round(between, 5)
        out["session_effect_sd_rel"] = round(float(np.sqrt(max(between**2 - expected**2, 0.0))), 5)
        out["tau_session_vs_session"] = round(kendall_tau(means[:, 0], means[:, 1]), 4)
    per_round = logs.mean(axis=1)  # sessions averaged: one value per subnet and round
    rng = np.random.default_rng(seed)
    curve = []
    for k in range(1, rounds // 2 + 1):
        retest, vs_pred = [], []
        for _ in range(draws):
            perm = rng.permutation(rounds)
            a = np.median(per_round[:, perm[:k]], axis=1)
            b = np.median(per_round[:, perm[k:2 * k]], axis=1)
            retest.append(kendall_tau(a, b))
            if predicted is not None:
                vs_pred.append(kendall_tau(predicted, a))
        row = {"rounds": k, "retest_tau": round(float(np.mean(retest)), 4)}
        if predicted is not None:
            row["calibrated_tau"] = round(float(np.mean(vs_pred)), 4)
        curve.append(row)
    out["k_round_medians"] = curve
    median_all = np.exp(np.median(per_round, axis=1))
    out["spread_sd_log"] = round(float(np.log(median_all).std()), 4)
    if predicted is not None:
        out["calibrated_vs_all_rounds"] = {"kendall_tau": round(kendall_tau(predicted, median_all), 4),
                                           "within_10pct": float(np.mean(np.abs(predicted / median_all - 1) < 0.1))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="latency table (T.json); its calibration, if beside it, is scored too")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--out", default=None, help="also write the result JSON (with every median) here")
    args = p.parse_args()
    if args.n < 2 or args.rounds < 2 or args.sessions < 1:
        p.error("--n and --rounds must be at least 2, --sessions at least 1")
    try:
        predictor = LatencyPredictor.load(args.table)
        archs = sample_distinct(predictor.space, args.n, np.random.default_rng(args.seed))
        predicted = predictor.predict(archs) if predictor.calibration is not None else None
        started, load_start = time.perf_counter(), os.getloadavg()
        ms = time_rounds(args.table, archs, args.sessions, args.rounds)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    result = {
        "table": args.table, "n": args.n, "rounds": args.rounds, "sessions": args.sessions, "seed": args.seed,
        "calibration": str(calibration_path(args.table)) if predicted is not None else None,
        **analyse(ms, predicted),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**result, "archs": archs, "ms": np.round(ms, 6).tolist()}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
