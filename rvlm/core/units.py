"""How rvlm writes a size for people, in every message, plan warning and CLI line.

Decimal units with their SI labels, as :func:`rich.filesize.decimal` writes them:
``812 bytes``, ``1.0 kB``, ``5.3 MB`` (5,300,000 bytes). ``FT.INFO`` reports its ``*_sz_mb``
fields in MiB (bytes / 1024²); :func:`mib_to_bytes` turns them back into bytes first, so a size
is never shown with the wrong label.
"""

from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """``n`` bytes as people read them (``unknown`` for ``None``)."""
    from rich.filesize import decimal

    if n is None:
        return "unknown"
    if n < 0:
        return "-" + decimal(int(-n))
    return decimal(int(n))


def mib_to_bytes(mib: float) -> int:
    """Bytes from a size in MiB (what ``FT.INFO``'s ``*_sz_mb`` fields hold)."""
    return round(mib * 1024 * 1024)
