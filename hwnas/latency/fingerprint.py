"""What device a latency table was measured on: CPU, cores, OS, Python, GPU and driver."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# the fields that name the hardware: a table measured where any of them differ is another device's
IDENTITY_FIELDS = ("cpu_model", "cpu_cores", "machine", "gpu_name")


def cpu_model() -> str:
    """The CPU's marketing name ("model name" in /proc/cpuinfo), or the platform's best guess."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            # x86 says "model name"; some ARM kernels say "Hardware" or "Model"
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def gpu_info() -> dict[str, Any]:
    """Name, count and driver of the CUDA GPU torch sees; empty when there is none."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    info: dict[str, Any] = {
        "gpu_name": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
        "cuda_runtime": torch.version.cuda,
    }
    driver = _nvidia_driver()
    if driver:
        info["gpu_driver"] = driver
    return info


def _nvidia_driver() -> str | None:
    proc_version = Path("/proc/driver/nvidia/version")
    if proc_version.is_file():
        for token in proc_version.read_text(errors="replace").split():
            if token.count(".") >= 1 and token.replace(".", "").isdigit():
                return token
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout
            return out.strip().splitlines()[0] if out.strip() else None
        except (subprocess.SubprocessError, OSError):
            return None
    return None


def device_fingerprint() -> dict[str, Any]:
    """The machine these measurements come from (recorded in every latency table)."""
    fingerprint: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count() or 1,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu_name": None,
    }
    fingerprint.update(gpu_info())
    return fingerprint


def same_device(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The identity fields on which two fingerprints differ (empty: the same device)."""
    return [f for f in IDENTITY_FIELDS if a.get(f) != b.get(f)]
