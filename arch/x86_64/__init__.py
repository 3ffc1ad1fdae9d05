"""x86_64 paging: 4-level (48-bit VA) and 5-level (LA57, 57-bit VA) tables."""

from .codec import X64Codec
from .table import X64MetaData, X64MetaData5, X64PageTable, X64PageTable5

__all__ = ["X64Codec", "X64MetaData", "X64MetaData5", "X64PageTable", "X64PageTable5"]
