"""Weight-sharing (once-for-all) supernets, subnet extraction and BatchNorm recalibration."""

from hwnas.supernet.elastic import SpecSupernet
from hwnas.supernet.network import Supernet, build_supernet, recalibrate_bn, resize_input

__all__ = ["SpecSupernet", "Supernet", "build_supernet", "recalibrate_bn", "resize_input"]
