"""The backup dir of one apply: bound to one plan, reopened to resume or roll back.

It holds ``plan.yaml`` (a copy of the plan), ``manifest.json`` (the plan fingerprint, the
indexes, the storage type and the batch size; :mod:`rvlm.core.storage.backup`), the key file
``keys.rvk`` (:mod:`rvlm.core.storage.keyfile`), one journal and one data file per worker
(:mod:`rvlm.core.storage.journal`, :mod:`rvlm.core.storage.backup`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.storage.backup.manifest import MANIFEST_NAME, read_manifest, write_manifest
from rvlm.core.storage.files import BackupCorrupt, check_backup_files
from rvlm.core.storage.redisvl import redisvl_backup

PLAN_NAME = "plan.yaml"
KEYS_NAME = "keys.rvk"


def prepare_backup_dir(directory: Path, plan: Plan, batch_size: int) -> tuple[dict[str, Any], bool]:
    """Create the backup dir for ``plan`` or reopen it. Returns (manifest, created).

    A directory made for another plan (fingerprint) is refused; one that holds anything but
    an rvlm backup is refused. On reopen the manifest's batch size wins (batch numbers in
    the journal and backups depend on it).
    """
    directory = Path(directory)
    try:
        existing = directory.is_dir() and any(directory.iterdir())
        if directory.exists() and not directory.is_dir():
            raise RvlmError(f"backup dir {directory} is a file; name a directory")
    except OSError as exc:
        raise RvlmError(f"backup dir {directory}: cannot read it ({_reason(exc)}); nothing "
                        "was changed") from None
    if existing:
        check_backup_files(directory)
        if not (directory / MANIFEST_NAME).exists():
            foreign = redisvl_backup(directory)
            if foreign is not None:
                raise RvlmError(f"{foreign}; rvlm does not resume or reuse it: use a new "
                                "--backup-dir for rvlm apply (and keep this one for "
                                f"rvl migrate rollback --backup-dir {directory})")
            raise RvlmError(f"{directory} is not empty and is not an rvlm backup dir; "
                            "use a new --backup-dir")
        manifest = read_manifest(directory)
        if manifest.get("plan_fingerprint") != plan.fingerprint:
            raise RvlmError(
                f"backup dir {directory} belongs to another plan (fingerprint "
                f"{manifest.get('plan_fingerprint')}, this plan {plan.fingerprint}); "
                "use a new --backup-dir")
        return manifest, False
    if batch_size <= 0:
        raise RvlmError(f"batch size must be positive, got {batch_size}")
    made = not directory.exists()
    manifest = {
        "plan_fingerprint": plan.fingerprint,
        "source_index": plan.source_index,
        "target_index": plan.target_index,
        "storage_type": plan.source_schema.storage_type,
        "batch_size": batch_size,
        "created_at": time.time(),
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        plan.write(directory / PLAN_NAME)
        write_manifest(directory, manifest)
    except OSError as exc:
        if made:  # leave nothing half-made behind
            shutil.rmtree(directory, ignore_errors=True)
        raise RvlmError(f"backup dir {directory}: cannot create it ({_reason(exc)}); nothing "
                        "was changed") from None
    return manifest, True


def _reason(exc: OSError) -> str:
    """Why the OS refused, in its words: "Permission denied", "Not a directory: 'a/b'"."""
    where = f": {exc.filename!r}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def check_backup_dir_name(backup_dir: str | Path) -> Path:
    """``backup_dir`` as a Path; an empty name (which would mean the current directory) is
    refused."""
    if not str(backup_dir).strip():
        raise RvlmError("--backup-dir is empty: name the directory for the backup (it is "
                        "created if it does not exist)")
    return Path(backup_dir)


def backup_dir_for(directory: str | Path, index: str | None = None) -> Path:
    """The backup dir of one apply: ``directory`` itself, or the subdirectory of a batch's
    backup dir (``<backup-dir>/<index>/``) whose migration has ``index`` as its source or
    target (RedisVL's ``rollback --index``). Raises :class:`RvlmError` naming the indexes the
    directory holds when ``index`` is missing, ambiguous or not there."""
    directory = check_backup_dir_name(directory)
    if (directory / MANIFEST_NAME).exists():
        if index is not None:
            manifest = read_manifest(directory)
            pair = (manifest.get("source_index"), manifest.get("target_index"))
            if index not in pair:
                raise RvlmError(f"backup dir {directory} holds the migration of index "
                                f"{pair[0]!r} -> {pair[1]!r}, not of {index!r}")
        return directory
    try:
        subdirs = sorted(p for p in directory.iterdir() if (p / MANIFEST_NAME).is_file())
    except OSError:
        return directory  # load_backup_plan says what is wrong with it
    if not subdirs:
        return directory
    held = {p: read_manifest(p) for p in subdirs}
    names = ", ".join(sorted(str(m.get("source_index")) for m in held.values()))
    if index is None:
        if len(held) == 1:
            return subdirs[0]
        raise RvlmError(f"{directory} holds the backups of a batch (indexes {names}): name the "
                        "index to roll back with --index")
    found = [p for p, m in held.items() if index in (m.get("source_index"),
                                                      m.get("target_index"))]
    if not found:
        raise RvlmError(f"{directory} holds no backup of index {index!r} (it holds {names})")
    return found[0]


def load_backup_plan(directory: Path) -> Plan:
    """The plan a backup dir was made for, checked against its manifest."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RvlmError(f"backup dir {directory} does not exist")
    check_backup_files(directory)
    if not (directory / MANIFEST_NAME).exists():
        foreign = redisvl_backup(directory)
        if foreign is not None:
            raise RvlmError(f"{foreign}; rvlm never loads pickled backups (loading one can run "
                            f"code): roll it back with RedisVL (rvl migrate rollback "
                            f"--backup-dir {directory})")
    manifest = read_manifest(directory)
    try:
        plan = Plan.load(directory / PLAN_NAME)
    except FileNotFoundError:
        raise BackupCorrupt(f"{directory / PLAN_NAME}: plan copy missing") from None
    if manifest.get("plan_fingerprint") != plan.fingerprint:
        raise BackupCorrupt(f"{directory}: plan.yaml does not match the manifest's fingerprint")
    return plan


__all__ = ["KEYS_NAME", "PLAN_NAME", "backup_dir_for", "check_backup_dir_name",
           "load_backup_plan", "prepare_backup_dir"]
