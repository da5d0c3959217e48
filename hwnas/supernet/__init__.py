"""Weight-sharing (once-for-all) supernets, subnet extraction and BatchNorm recalibration."""

from hwnas.supernet.network import Supernet, build_supernet, recalibrate_bn, resize_input

__all__ = ["Supernet", "build_supernet", "recalibrate_bn", "resize_input"]
