"""`hwnas profile`: not available yet (its implementation lands with its own change)."""

from __future__ import annotations

import argparse

from hwnas.errors import NotAvailableError

HELP = "not available yet"
DESCRIPTION = HELP


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> dict:
    raise NotAvailableError("'hwnas profile' is not available yet")
