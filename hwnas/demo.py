"""`hwnas demo`: the whole pipeline on the embedded default, verb by verb.

profile this CPU (onnxruntime, 1 thread) -> calibrate the latency predictor on end-to-end
measurements -> train the supernet on the shipped Fashion-MNIST subset -> search under a
budget (the median predicted latency of random subnets) -> export the best subnet under the
budget to ONNX and TVM and measure it -> a Markdown report with the plots.

Each step is the library verb its CLI verb calls (hwnas.pipeline), and writes the same artifacts, into the
output folder; a step whose artifact is already there (for this machine) is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.errors import InputError
from hwnas.pipeline import VerbResult
from hwnas.resources import table_dir

SPACE = "mbv3-small-input"
PROFILE = "cpu-ort-1t"
DEMO_EPOCHS = 6  # of the short schedule (TrainSettings.short_schedule)
SHIPPED_TABLES = table_dir()  # the checkout's latency_tables/, or the installed package's copy


@dataclass(kw_only=True)
class DemoResult(VerbResult):
    """The demo's figures (`summary`) and report; `details` holds each step's result by verb."""

    seconds: float
    budget_ms: float
    report: str
    summary: dict


def _step(title: str) -> None:
    print(f"\n== {title}", file=sys.stderr, flush=True)


def _same_machine(table_path: Path) -> bool:
    from hwnas.latency.fingerprint import device_differences, device_fingerprint
    from hwnas.latency.table import LatencyTable

    try:
        table = LatencyTable.load(table_path)
    except InputError:
        return False
    return table.complete and not device_differences(table.device, device_fingerprint())


def _same_space(table_path: Path, config: dict) -> bool:
    """Whether the table is of this very space (a spec file named like a built-in space is another one)."""
    from hwnas.latency.table import LatencyTable

    return LatencyTable.load(table_path).space.get("config") == json.loads(json.dumps(config))


def _space(space: str) -> tuple[str, dict, str, dict]:
    """(the space argument, its options for the shipped subset, its name, its configuration)."""
    from hwnas.data import load_dataset
    from hwnas.space import get_space

    data = load_dataset(None)  # the shipped subset: the space takes its channels and classes
    space_options = {"in_channels": data.in_channels, "num_classes": data.num_classes}
    space_obj = get_space(space, **space_options)
    return space, space_options, space_obj.name, space_obj.config()


def latency_table(out: Path, space: str = SPACE) -> tuple[Path, dict[str, Any]]:
    """out/latency_table.json for PROFILE: a complete table measured on this same machine (the shipped
    one when it was), else profiled (quick protocol; an interrupted one is completed)."""
    from hwnas import pipeline

    space_arg, space_options, space_name, space_config = _space(space)
    table = out / "latency_table.json"
    shipped = SHIPPED_TABLES / f"{PROFILE}_{space_name}.json"
    if not table.exists() and shipped.exists() and _same_machine(shipped) and _same_space(shipped, space_config):
        shutil.copyfile(shipped, table)
        print(f"reusing {shipped} (measured on this machine)", file=sys.stderr)
    if table.exists() and _same_machine(table) and _same_space(table, space_config):
        return table, {"table": str(table), "reused": True}
    return table, pipeline.profile(PROFILE, space_arg, table, quick=True, resume=True,
                                   space_options=space_options).to_dict()


def train_and_search(out: Path, table: Path, *, space: str = SPACE, epochs: int = DEMO_EPOCHS,
                     budget_ms: float | None = None, pop: int = 20, gens: int = 8, seed: int = 0,
                     threads: int | None = None, overwrite: bool = False,
                     max_time: str | float | None = "10m") -> tuple[float, dict, dict]:
    """The demo's steps 3 and 4: train the supernet (out/supernet.pt, the short schedule), then search
    under `budget_ms` (default: the median predicted latency of 500 random subnets) into out/search.
    Returns (budget_ms, the train result, the search result) as dicts."""
    from hwnas import pipeline
    from hwnas.latency.predictor import LatencyPredictor
    from hwnas.search import SearchBudget, get_strategy
    from hwnas.search.strategies import DEFAULT_STRATEGY

    _step("3/5 supernet training on the shipped Fashion-MNIST subset")
    ckpt = out / "supernet.pt"
    trained = pipeline.train(out=ckpt, quick=True, resume=ckpt.exists(), threads=threads, space=space,
                             epochs=epochs, seed=seed).to_dict()
    predictor = LatencyPredictor.load(table)
    if budget_ms is None:
        rng = np.random.default_rng(seed)
        predicted = predictor.predict([predictor.space.sample(rng) for _ in range(500)])
        budget_ms = float(np.round(np.median(predicted), 3))
        print(f"budget: {budget_ms} ms = median predicted latency of 500 random subnets", file=sys.stderr)
    # the name of what runs (the default hands over to nsga2 without an evaluation budget),
    # as the progress line, the plot and pareto.json's strategy_ran name it
    ran = get_strategy(DEFAULT_STRATEGY, pop_size=pop).strategy_ran(SearchBudget(None, gens))
    _step(f"4/5 {ran} search under {budget_ms} ms")
    searched = pipeline.search(space, table=table, supernet=ckpt, budget_ms=budget_ms, pop_size=pop,
                               generations=gens, seed=seed, out=out / "search", overwrite=overwrite,
                               max_time=max_time).to_dict()
    return budget_ms, trained, searched


def demo(
    out: str | Path = "hwnas-demo",
    *,
    epochs: int = DEMO_EPOCHS,
    budget_ms: float | None = None,
    validate_n: int = 30,
    pop: int = 20,
    gens: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    space: str = SPACE,
) -> DemoResult:
    """The whole pipeline in `out` on `space` (a name or a spec file), each step a library verb; a step
    whose artifact is there is reused."""
    began = time.perf_counter()
    out = Path(out)
    done = [p for p in (out / "search" / "pareto.json", out / "bundle") if p.exists()]
    if done and not overwrite:  # the table and the checkpoint are reused; a finished run's results are not replaced
        raise InputError(f"holds a finished demo ({', '.join(str(p) for p in done)}); pass --overwrite to search "
                         "and export again, or give another --out", path=str(out), field="--out")
    # one core stays free: a torch thread team that shares every core with anything else
    # stalls at each barrier (seen here: 220 img/s quiet, 25 img/s beside one busy process)
    threads = max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Any] = {}

    from hwnas import pipeline

    space_arg, space_options, space_name, _ = _space(space)

    # 1. latency table: reuse a complete table measured on this same machine, else profile
    _step(f"1/5 latency table for {PROFILE} ({space_name})")
    table, steps["profile"] = latency_table(out, space_arg)

    # 2. calibrate the predictor on end-to-end measurements of random subnets
    _step("2/5 latency predictor vs end-to-end measurements")
    steps["validate"] = pipeline.validate(table, validate_n, calib_n=validate_n, plot=out / "validate.png",
                                          seed=seed).to_dict()

    # 3. supernet, 4. search under the budget
    ckpt, search_dir = out / "supernet.pt", out / "search"
    budget_ms, steps["train"], steps["search"] = train_and_search(
        out, table, space=space_arg, epochs=epochs, budget_ms=budget_ms, pop=pop, gens=gens, seed=seed,
        threads=threads, overwrite=overwrite)

    # 5. export and measure
    _step("5/5 export the best subnet under the budget (ONNX, TVM) and measure it")
    bundle = out / "bundle"  # an earlier bundle is replaced only by a complete new one
    steps["export"] = pipeline.export(search_dir / "pareto.json", pick="best-under-budget", formats=("onnx", "tvm"),
                                      profile=PROFILE, out=bundle).to_dict()

    # the largest and smallest subnets on the same two splits as the exported one, so that the
    # report compares figures measured alike
    steps["extremes"] = extremes_accuracy(ckpt)

    seconds = round(time.perf_counter() - began, 1)
    summary = _summary(steps, budget_ms, bundle)
    report = _write_report(out, steps, summary, seconds, space_name)
    return DemoResult.from_dict({"seconds": seconds, "budget_ms": budget_ms, "report": str(report),
                                 "summary": summary, **steps})


def signal_benchmark(out: str | Path, seeds: list[int], *, full: bool = False, epochs: int = DEMO_EPOCHS,
                     pop: int = 20, gens: int = 8, space: str = SPACE, table: str | Path | None = None,
                     max_time: str | float | None = "10m", test_evaluated: bool = False) -> list[dict[str, Any]]:
    """Whether the demo's accuracy estimates can be trusted, per seed: the whole demo (`full`) or its
    train and search steps at the demo's settings, in out/seed-N. Each seed's record: Kendall tau
    between the evaluated subnets' accuracy estimates (val) and their MACs, the best subnet under the
    budget's estimate and test accuracy (the bundle's model.onnx when `full`, else the same subnet's
    shared weights, BN recalibrated, on the test split), their difference and its standard error.
    `table`: a latency table (with its calibration beside it, as a demo's validate step leaves it) to
    search with instead of the shipped, uncalibrated one; `max_time`: the search's time limit (None:
    all pop x gens evaluations however long they take). `test_evaluated`: also score every evaluated
    subnet on the test split (about as long as the search again) and report, beside tau(estimate, MACs),
    tau(test accuracy, MACs), whether the supernet's subnets themselves rise with size, and tau(estimate,
    test accuracy), how well the estimates rank them: a low first tau with a high last one says the
    estimates are faithful and the supernet is what does not order its subnets by size."""
    from hwnas.estimate.supernet import SupernetEstimator
    from hwnas.latency.predictor import calibration_path
    from hwnas.stats import binomial_stderr

    if table is not None and not Path(table).is_file():  # before any seed runs: not a silent shipped table
        raise InputError("latency table not found", path=str(table), field="table")
    threads = max(1, (os.cpu_count() or 1) - 1)  # as the demo runs
    torch.set_num_threads(threads)
    records = []
    for seed in seeds:
        where = Path(out) / f"seed-{seed}"
        began = time.perf_counter()
        if full:
            summary = demo(where, seed=seed, epochs=epochs, pop=pop, gens=gens, overwrite=True,
                           space=space).summary
            estimate, test = summary["estimate"], summary["test"]
            signal, selection = summary["accuracy_vs_macs"], summary["selection"]
            trained = {"acc_largest": summary["extremes"]["largest"]["test"]["percent"],
                       "acc_smallest": summary["extremes"]["smallest"]["test"]["percent"]}
        else:
            where.mkdir(parents=True, exist_ok=True)
            if table is not None:
                for source in (Path(table), calibration_path(table)):
                    if source.exists():
                        shutil.copyfile(source, calibration_path(where / "latency_table.json")
                                        if source.name.endswith(".calibration.json") else where / "latency_table.json")
            searched_table, _ = latency_table(where, space)
            _, trained, searched = train_and_search(where, searched_table, space=space, epochs=epochs, pop=pop,
                                                    gens=gens, seed=seed, threads=threads, overwrite=True,
                                                    max_time=max_time)
            best = searched["best_under_budget"]
            signal, selection = searched.get("accuracy_vs_macs"), best.get("selection")
            uncertainty = searched["uncertainty"]["accuracy"]
            value = best["objectives"]["accuracy"]
            estimate = {"percent": value, "stderr": binomial_stderr(value, uncertainty["images"]),
                        "split": uncertainty["split"], "images": uncertainty["images"]}
            on_test = SupernetEstimator(where / "supernet.pt", split="test")
            value = on_test.accuracy(best["arch"])
            test = {"percent": value, "stderr": binomial_stderr(value, on_test.eval_size), "split": "test",
                    "images": on_test.eval_size}
        rescored = _test_evaluated(where / "search" / "pareto.json") if test_evaluated else {}
        records.append({"seed": seed, "kendall_tau_accuracy_macs": (signal or {}).get("kendall_tau"), **rescored,
                        "evaluated": (signal or {}).get("subnets"), "estimate": estimate, "test": test,
                        "estimate_vs_test": _agreement(estimate, test),
                        "tied": (selection or {}).get("tied"),
                        "acc_largest_test": trained.get("acc_largest"),
                        "acc_smallest_test": trained.get("acc_smallest"),
                        "seconds": round(time.perf_counter() - began, 1), "full_demo": full})
    return records


def _test_evaluated(pareto_json: Path) -> dict[str, Any]:
    """Every subnet a search evaluated (pareto.json's "evaluated"), scored on the test split with the
    same shared weights: Kendall tau of the test accuracies with MACs and with the search's estimates."""
    from hwnas.estimate.supernet import SupernetEstimator
    from hwnas.stats import kendall_tau

    doc = json.loads(pareto_json.read_text())
    entries = [e for e in doc.get("evaluated") or [] if "accuracy" in e.get("objectives", {})]
    if len(entries) < 2:
        raise InputError("lists fewer than two evaluated subnets with an accuracy estimate (a pareto.json "
                         "written before 'evaluated' was recorded? search again)", path=str(pareto_json),
                         field="evaluated")
    on_test = SupernetEstimator(doc["supernet"], split="test")
    estimates = [float(e["objectives"]["accuracy"]) for e in entries]
    test = [float(on_test.accuracy(e["arch"])) for e in entries]
    macs = [float(on_test.space.flops(e["arch"])) for e in entries]
    return {"kendall_tau_test_macs": round(kendall_tau(test, macs), 4),
            "kendall_tau_estimate_test": round(kendall_tau(estimates, test), 4), "test_images": on_test.eval_size}


def extremes_accuracy(checkpoint: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The largest and smallest subnets' accuracy with the supernet's shared weights (BN recalibrated,
    as the search estimates), on the validation split the search ranks by and on the test split:
    {"largest": {"macs", "val": figure, "test": figure}, "smallest": ...}, each figure as the bundle's
    manifest writes one (percent, stderr, split, images)."""
    from hwnas.estimate.supernet import SupernetEstimator
    from hwnas.stats import binomial_stderr

    result: dict[str, dict[str, Any]] = {}
    estimators = {split: SupernetEstimator(checkpoint, split=split) for split in ("val", "test")}
    space = estimators["val"].space
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        result[name] = {"macs": int(space.flops(arch))}
        for split, est in estimators.items():
            percent = est.accuracy(arch)
            result[name][split] = {"percent": round(percent, 4),
                                   "stderr": round(binomial_stderr(percent, est.eval_size), 4),
                                   "split": split, "images": est.eval_size}
    return result


def _summary(steps: dict[str, Any], budget_ms: float, bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    best = steps["search"]["best_under_budget"] or {}
    measured = manifest.get("measured_ms") or manifest.get("latency", {}).get("measured_ms")
    accuracy = manifest.get("accuracy") or {}
    estimate, test = accuracy.get("estimate") or {}, accuracy.get("test") or {}
    return {
        "budget_ms": budget_ms,
        "predicted_ms": steps["export"].get("predicted_ms"),
        "measured_ms": steps["export"].get("measured_ms", measured),
        "artifact_ms": (manifest.get("latency", {}).get("artifact_ms") or {}).get("onnxruntime"),
        "accuracy_estimate": best.get("objectives", {}).get("accuracy", best.get("accuracy")),
        # each accuracy with the split and number of images it was measured on
        "accuracy_estimate_split": _split(estimate),
        "accuracy_test": test.get("percent"),
        "accuracy_test_split": _split(test),
        "estimate": estimate,  # the manifest's figures: percent, stderr, split, images
        "test": test,
        "estimate_vs_test": _agreement(estimate, test),
        "selection": best.get("selection"),
        "accuracy_vs_macs": steps["search"].get("accuracy_vs_macs"),
        "extremes": steps.get("extremes") or {},
        "files": list((steps["export"].get("files") or {}).values()),
    }


# the estimate's stated uncertainty: a 95 % interval, 1.96 combined standard errors (one standard error
# holds an unbiased estimate's difference from the test figure only two times in three)
INTERVAL_Z = 1.96


def _agreement(estimate: dict[str, Any], test: dict[str, Any]) -> dict[str, Any] | None:
    """test - estimate, its standard error (the two splits' sampling errors combined), its 95 % interval
    and whether the difference is within that interval (and within one standard error)."""
    if not estimate or not test or estimate.get("stderr") is None or test.get("stderr") is None:
        return None
    diff = float(test["percent"]) - float(estimate["percent"])
    se = float(np.hypot(estimate["stderr"], test["stderr"]))
    return {"difference": round(diff, 4), "stderr": round(se, 4), "interval95": round(INTERVAL_Z * se, 4),
            "within": bool(abs(diff) <= INTERVAL_Z * se), "within_1se": bool(abs(diff) <= se)}


def _split(figure: dict[str, Any]) -> str:
    """ "val, 1000 images, ± 1.4" for a manifest accuracy figure."""
    if not figure:
        return "not measured"
    parts = [str(figure.get("split"))]
    if figure.get("images"):
        parts.append(f"{figure['images']} images")
    if figure.get("stderr") is not None:
        parts.append(f"standard error {figure['stderr']:.2g} points")
    return ", ".join(parts)


def _figure(fig: dict[str, Any] | None) -> str:
    """ "71.1 ± 1.4 % (1000 images)" for an accuracy figure."""
    if not fig or fig.get("percent") is None:
        return "not measured"
    se = f" ± {fig['stderr']:.2g}" if fig.get("stderr") is not None else ""
    images = f" ({fig['images']} images)" if fig.get("images") else ""
    return f"{fig['percent']:.4g}{se} %{images}"


def _accuracy_section(summary: dict[str, Any]) -> list[str]:
    """The accuracies by subnet and split: every figure in a column says which split it is on."""
    extremes = summary.get("extremes") or {}
    estimate, test = summary.get("estimate"), summary.get("test")
    lines = [
        "## Accuracy by split",
        "",
        "Every figure is top-1 accuracy ± its binomial standard error. **val**: the validation split held out "
        "of the training images, which the search ranks subnets by (its estimates); **test**: the test split, "
        "which no training or search step sees.",
        "",
        "| subnet | val (search's estimate) | test |",
        "|---|---|---|",
        f"| exported (best under the budget) | {_figure(estimate)} | {_figure(test)}, the bundle's model.onnx |",
        *[f"| {name} subnet | {_figure(e.get('val'))} | {_figure(e.get('test'))}, shared weights |"
          for name, e in extremes.items()],
        "",
    ]
    agreement = summary.get("estimate_vs_test")
    if agreement:
        lines += [f"Exported subnet, test minus estimate: {agreement['difference']:+.3g} points, "
                  f"{'within' if agreement['within'] else 'outside'} the 95 % interval of ± "
                  f"{agreement.get('interval95', INTERVAL_Z * agreement['stderr']):.2g} points ({INTERVAL_Z} "
                  f"combined standard errors of {agreement['stderr']:.2g}). The estimate of the picked subnet is "
                  "biased upward by the picking.", ""]
    selection = summary.get("selection") or {}
    if selection.get("note"):
        lines += [f"Pick: {selection['note']}.", ""]
    signal = summary.get("accuracy_vs_macs")
    if signal:
        lines += [f"Do the estimates rise with size? Kendall tau between the accuracy estimates of the "
                  f"{signal['subnets']} evaluated subnets and their MACs: **{signal['kendall_tau']:.2f}** "
                  "(near 0: the estimates are noise, or the subnets under the budget differ too little in "
                  "accuracy for size to show; `tools/bench_demo_signal.py --test-evaluated` tells the two apart "
                  "by scoring every evaluated subnet on the test split).", ""]
    return lines


def _write_report(out: Path, steps: dict[str, Any], summary: dict[str, Any], seconds: float,
                  space_name: str = SPACE) -> Path:
    v = steps["validate"]
    lines = [
        "# hwnas demo report",
        "",
        f"Space `{space_name}`, device profile `{PROFILE}` (onnxruntime CPU, 1 thread), shipped Fashion-MNIST subset.",
        f"Whole pipeline: {seconds} s.",
        "",
        "| | |",
        "|---|---|",
        f"| latency budget | {summary['budget_ms']} ms |",
        f"| predicted latency of the exported subnet | {_fmt(summary['predicted_ms'])} ms |",
        f"| measured latency of the exported network (what the table predicts) | {_fmt(summary['measured_ms'])} ms |",
        f"| measured latency of the bundle's model.onnx, input preprocessing included | "
        f"{_fmt(summary.get('artifact_ms'))} ms |",
        f"| accuracy estimate of the exported subnet, used by the search ({summary['accuracy_estimate_split']}) | "
        f"{_fmt(summary['accuracy_estimate'])} % |",
        f"| test accuracy of the exported model.onnx ({summary['accuracy_test_split']}) | "
        f"{_fmt(summary['accuracy_test'])} % |",
        "",
        *_accuracy_section(summary),
        "## Latency predictor against end-to-end measurements",
        "",
        f"{v.get('n')} random subnets measured end to end; the calibrated predictor is within ±10 % on "
        f"{_fmt(100 * (v.get('within_10pct') or 0))} % of them, Kendall tau {_fmt(v.get('kendall_tau'))}, "
        f"MAPE {_fmt(v.get('mape'))} % (raw sum of the table: within ±10 % on "
        f"{_fmt(100 * ((v.get('raw') or {}).get('within_10pct') or 0))} %).",
        "",
        "![predicted vs measured](validate.png)",
        "",
        "## Pareto front",
        "",
        "Accuracy estimates (val) with ± 1 standard error bars; the circled subnet is the one exported.",
        "",
        "![pareto](search/pareto.png)",
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in (summary.get("files") or [])],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def print_table(result: dict[str, Any]) -> None:
    s = result["summary"]
    rows = [
        ("budget", f"{s['budget_ms']} ms"),
        ("predicted latency", f"{_fmt(s['predicted_ms'])} ms"),
        ("measured latency", f"{_fmt(s['measured_ms'])} ms"),
        ("accuracy estimate", f"{_fmt(s['accuracy_estimate'])} % ({s['accuracy_estimate_split']})"),
        ("test accuracy", f"{_fmt(s['accuracy_test'])} % ({s['accuracy_test_split']})"),
        *[(f"{name} subnet", f"val {_figure(e.get('val'))}, test {_figure(e.get('test'))}")
          for name, e in (s.get("extremes") or {}).items()],
        *([("accuracy vs MACs", f"Kendall tau {s['accuracy_vs_macs']['kendall_tau']:.2f} over "
                                f"{s['accuracy_vs_macs']['subnets']} evaluated subnets")]
          if s.get("accuracy_vs_macs") else []),
        ("report", result["report"]),
        *[("file", f) for f in (s.get("files") or [])],
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="hwnas-demo", metavar="D/", help="output folder (default hwnas-demo/)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                        help=f"supernet training epochs of the short schedule (default {DEMO_EPOCHS})")
    parser.add_argument("--budget-ms", type=float, default=None,
                        help="latency budget (default: median predicted latency of random subnets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="search and export again into a finished demo's --out")
    parser.add_argument("--space", default=SPACE, metavar="S",
                        help=f"search space: a name or a spec file (default {SPACE})")


from hwnas.verb_module import make_verb  # noqa: E402

make_verb(__name__, "hwnas.demo:demo")  # hwnas.demo(...) runs the demo
