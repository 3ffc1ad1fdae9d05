"""AArch64 stage-1 translation tables, 4 KiB granule, 4 levels, 48-bit VA, either VA range."""

from .codec import MAIR_VALUE, A64Codec
from .table import A64MetaData, A64PageTable, VaRange

__all__ = ["MAIR_VALUE", "A64Codec", "A64MetaData", "A64PageTable", "VaRange"]
