"""LoongArch64 page tables for the hardware page walker (LoongArch Reference Manual Vol. 1,
5.4 "Page walk", 7.5.x CSR.PWCL/PWCH)."""

from .codec import LA64Codec
from .table import PWCH_VALUE, PWCL_VALUE, LA64MetaData, LA64PageTable

__all__ = ["PWCH_VALUE", "PWCL_VALUE", "LA64Codec", "LA64MetaData", "LA64PageTable"]
