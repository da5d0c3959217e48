"""`hwnas` command line: a thin shell over the library.

Each verb lives in `hwnas/commands/<verb>.py` with `configure(parser)`, `run(args)` (one library
call; its result's `to_dict()` is what `--json` prints) and `FLAGS`, the flag that sets each library
field, so an InputError from the library names the flag.
`--json` prints exactly one JSON object on stdout; progress and logs go to stderr.
Exit status: 0 success, 2 bad input, 1 anything else. Every failure is one line on stderr;
the traceback is printed only with `--debug` (or HWNAS_DEBUG=1). SIGTERM stops a run as
Ctrl-C does (partial work that can be resumed is kept). Numeric options are range-checked
and output paths checked writable here, before any work starts.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import math
import os
import signal
import sys
import traceback

from hwnas import __version__
from hwnas.errors import InputError, OutputError

# verb -> module under hwnas.commands (imported lazily so `hwnas --help` stays fast)
VERBS: dict[str, str] = {
    "profile": "profile",
    "validate": "validate",
    "fit-latency": "fit_latency",
    "train": "train",
    "search": "search",
    "bench": "bench",
    "export": "export",
    "demo": "demo",
    "space": "space",
}

# numeric options' allowed ranges, checked before a verb runs: verb -> {dest: (lowest, lowest allowed itself)}
_POSITIVE, _NON_NEGATIVE, _AT_LEAST_1 = (0, False), (0, True), (1, True)
RANGES: dict[str, dict[str, tuple[float, bool]]] = {
    "profile": {"limit": _AT_LEAST_1},
    "validate": {"n": (2, True), "calib_n": (3, True), "seed": _NON_NEGATIVE, "rounds": _AT_LEAST_1,
                 "passes": _AT_LEAST_1},
    "fit-latency": {"train_size": _AT_LEAST_1, "seed": _NON_NEGATIVE, "splits": _AT_LEAST_1},
    "train": {"epochs": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "lr": _POSITIVE, "seed": _NON_NEGATIVE,
              "num_random": _NON_NEGATIVE, "width_mult": _POSITIVE, "val_size": _NON_NEGATIVE,
              "limit_train": _AT_LEAST_1, "threads": _AT_LEAST_1},
    "search": {"budget_ms": _POSITIVE, "pop": _AT_LEAST_1, "gens": _AT_LEAST_1, "evals": _AT_LEAST_1,
               "max_params": _POSITIVE, "seed": _NON_NEGATIVE},
    "bench": {"evals": _AT_LEAST_1, "seed": _NON_NEGATIVE, "seeds": _AT_LEAST_1, "pop": _AT_LEAST_1},
    "export": {"tune_trials": _NON_NEGATIVE},
    "demo": {"epochs": _AT_LEAST_1, "budget_ms": _POSITIVE, "seed": _NON_NEGATIVE},
}
# output paths checked writable before a verb runs: verb -> [(dest, is a folder)]
OUTPUTS: dict[str, list[tuple[str, bool]]] = {
    "profile": [("out", False)],
    "validate": [("plot", False), ("calibration_out", False)],
    "fit-latency": [("out", False)],
    "train": [("out", False)],
    "search": [("out", True)],
    "export": [("out", True)],
    "demo": [("out", True)],
}
# an OSError with one of these is about a path the user named: bad input (exit 2)
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EEXIST}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwnas",
        description="Hardware-aware neural architecture search: profile a device, "
        "search a once-for-all supernet under a latency budget, export the subnet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module_name in VERBS.items():
        module = importlib.import_module(f"hwnas.commands.{module_name}")
        p = sub.add_parser(
            verb,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("--debug", action="store_true", help="print the traceback of a failure (also HWNAS_DEBUG=1)")
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it stops as it does on Ctrl-C."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - the signal handler's signature
    raise Terminated()


def check_arguments(args: argparse.Namespace) -> None:
    """The edge checks of every verb: numeric ranges, then writable output paths (InputError)."""
    from hwnas.io import check_writable

    for dest, (low, inclusive) in RANGES.get(args.verb, {}).items():
        value = getattr(args, dest, None)
        if value is None or isinstance(value, bool):
            continue
        flag = "--" + dest.replace("_", "-")
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            kind = "an integer" if isinstance(value, int) else "a number"
            bound = f">= {low}" if inclusive else f"> {low}"
            raise InputError(f"expected {kind} {bound}, got {value}", field=flag)
    for dest, folder in OUTPUTS.get(args.verb, []):
        value = getattr(args, dest, None)
        if value:
            check_writable(value, field="--" + dest.replace("_", "-"), folder=folder)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad usage
    if not args.verb:
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("HWNAS_DEBUG", "") not in ("", "0")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        check_arguments(args)
        result = args._module.run(args)
        if hasattr(result, "to_dict"):
            result = result.to_dict()
    except InputError as exc:
        # the library names its fields; say which flag of this verb sets each
        exc = exc.renamed(getattr(args._module, "FLAGS", {}))
        _emit_error(args, str(exc), status=2, debug=debug)
        return 2
    except Terminated:
        _emit_error(args, "terminated (SIGTERM)", status=1, debug=debug)
        return 1
    except KeyboardInterrupt:
        _emit_error(args, "interrupted", status=1, debug=debug)
        return 1
    except OutputError as exc:
        _emit_error(args, str(exc), status=1, debug=debug)
        return 1
    except OSError as exc:
        status = 2 if exc.errno in _PATH_ERRNOS else 1
        where = f"{exc.filename}: " if exc.filename else ""
        _emit_error(args, f"{where}{exc.strerror or exc}", status=status, debug=debug)
        return status
    except Exception as exc:  # noqa: BLE001 - the CLI boundary reports every failure
        _emit_error(args, f"{type(exc).__name__}: {exc}", status=1, debug=debug, hint=True)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        _print_human(result)
    return 0


def _emit_error(args: argparse.Namespace, message: str, *, status: int, debug: bool = False,
                hint: bool = False) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    message = " ".join(message.split())  # one line, whatever the exception's text
    suffix = " (run with --debug for the traceback)" if hint and not debug else ""
    print(f"hwnas {args.verb}: error: {message}{suffix}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "status": status}))


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _print_human(result: dict) -> None:
    if not result:
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=_json_default)
            if len(value) > 200:
                value = value[:197] + "..."
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
