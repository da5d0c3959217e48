"""What device a latency table was measured on: CPU, cores, OS, Python, GPU and driver."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# the fields that name the hardware: a table measured where any of them differ is another device's.
# cpu_isa: a cloud VM may report one model name ("AMD EPYC") for CPU generations whose vector units
# differ, and the runtimes pick other kernels on each. Seen: a table profiled on one host that said
# "AMD EPYC" ranked subnets at Kendall tau 0.96 there, and at 0.82 on another host that said the same
# (where torch also trained other weights from the same seed).
IDENTITY_FIELDS = ("cpu_model", "cpu_cores", "machine", "gpu_name", "cpu_isa")
# identity fields added after tables were first written: compared only where both fingerprints hold them
# (elsewhere None is a value: gpu_name None means no GPU)
LATER_FIELDS = frozenset({"cpu_isa"})

# the instruction-set extensions that decide which kernels a runtime runs (x86 flags, ARM features)
ISA_FLAGS = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512dq", "avx512bw", "avx512vl",
    "avx512cd", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512ifma", "avx512vbmi", "amx_tile", "amx_bf16",
    "amx_int8", "asimd", "asimddp", "asimdhp", "fphp", "sve", "sve2", "i8mm", "bf16", "sme",
})


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


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's vector extensions among ISA_FLAGS, sorted and space-separated ("flags" on x86,
    "Features" on ARM, in `cpuinfo`); None where the system does not say."""
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return " ".join(sorted(ISA_FLAGS.intersection(value.split())))
    return None


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
        "cpu_isa": cpu_isa(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu_name": None,
    }
    fingerprint.update(gpu_info())
    return fingerprint


def device_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The identity fields on which two fingerprints differ (empty: the same device); a LATER_FIELDS
    field is compared only where both record it (a table written before it cannot tell)."""
    return [f for f in IDENTITY_FIELDS if a.get(f) != b.get(f)
            and not (f in LATER_FIELDS and (a.get(f) is None or b.get(f) is None))]
