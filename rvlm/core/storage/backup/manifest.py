"""``manifest.json`` of a backup dir: one checksummed JSON document, replaced atomically."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from rvlm.core.storage.files import BackupCorrupt, fsync_directory

MANIFEST_VERSION = 1
MANIFEST_FORMAT = "rvlm-backup-manifest"
MANIFEST_NAME = "manifest.json"


def _canonical(manifest: Any) -> bytes:
    return json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically write ``{directory}/manifest.json``.

    ``manifest`` must be JSON-serialisable (tuples come back as lists, non-str keys as str).
    It is written to a temp file, fsynced, ``os.replace``'d over the old one and the directory
    fsynced: a reader sees the old manifest or the new one, never a mix.
    """
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict, not {type(manifest).__name__}")
    directory = Path(directory)
    normal = json.loads(json.dumps(manifest, allow_nan=False))
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "crc32": zlib.crc32(_canonical(normal)),
        "manifest": normal,
    }
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST_NAME)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(directory)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest dict as written. ``BackupCorrupt`` if missing, garbled, of an unknown
    format version, or its checksum does not match (edited or damaged)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BackupCorrupt(f"{path}: manifest missing", path=path) from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupCorrupt(f"{path}: manifest is not valid JSON ({exc})", path=path) from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise BackupCorrupt(f"{path}: not an rvlm backup manifest", path=path)
    if doc.get("version") != MANIFEST_VERSION:
        raise BackupCorrupt(
            f"{path}: unknown manifest version {doc.get('version')!r} "
            f"(this rvlm reads {MANIFEST_VERSION})",
            path=path,
        )
    manifest = doc.get("manifest")
    if not isinstance(manifest, dict):
        raise BackupCorrupt(f"{path}: manifest body missing", path=path)
    if zlib.crc32(_canonical(manifest)) != doc.get("crc32"):
        raise BackupCorrupt(f"{path}: manifest checksum mismatch (edited or damaged)", path=path)
    return manifest


__all__ = ["MANIFEST_NAME", "read_manifest", "write_manifest"]
