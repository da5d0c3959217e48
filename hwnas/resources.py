"""Where the shipped device profiles and latency tables are, in a checkout and in an installed wheel.

The top-level `device_profiles/` and `latency_tables/` of the repository are the source of truth;
the wheel carries copies inside the package (`hwnas/device_profiles/`, `hwnas/latency_tables/`,
put there by setup.py's build step), so an installed hwnas finds them from any folder.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The folder `name` ("device_profiles" or "latency_tables"): inside the installed package,
    else the checkout's top level."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


def profile_dir() -> Path:
    return shipped_dir("device_profiles")


def table_dir() -> Path:
    return shipped_dir("latency_tables")
