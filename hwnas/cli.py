"""`hwnas` command line: a thin shell over the library.

Each verb lives in `hwnas/commands/<verb>.py` with `configure(parser)`, `run(args)` (one library
call; its result's `to_dict()` is what `--json` prints) and `FLAGS`, the flag that sets each library
field, so an InputError from the library names the flag.
`--json` prints exactly one JSON object on stdout; progress and logs go to stderr.
Exit status: 0 success, 2 bad input, 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback

from hwnas import __version__
from hwnas.errors import InputError

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
        module.configure(p)
        p.set_defaults(_module=module)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad usage
    if not args.verb:
        parser.print_help(sys.stderr)
        return 2
    try:
        result = args._module.run(args)
        if hasattr(result, "to_dict"):
            result = result.to_dict()
    except InputError as exc:
        # the library names its fields; say which flag of this verb sets each
        exc = exc.renamed(getattr(args._module, "FLAGS", {}))
        _emit_error(args, str(exc), status=2)
        return 2
    except KeyboardInterrupt:
        _emit_error(args, "interrupted", status=1)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI boundary reports every failure
        traceback.print_exc(file=sys.stderr)
        _emit_error(args, f"{type(exc).__name__}: {exc}", status=1)
        return 1
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        _print_human(result)
    return 0


def _emit_error(args: argparse.Namespace, message: str, *, status: int) -> None:
    print(f"hwnas {args.verb}: error: {message}", file=sys.stderr)
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
