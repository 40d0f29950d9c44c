"""The backup dir of one apply: bound to one plan, reopened to resume or roll back.

It holds ``plan.yaml`` (a copy of the plan), ``manifest.json`` (the plan fingerprint, the
indexes, the storage type and the batch size; :mod:`rvlm.core.storage.backup`), the key file
``keys.rvk`` (:mod:`rvlm.core.storage.keyfile`), one journal and one data file per worker
(:mod:`rvlm.core.storage.journal`, :mod:`rvlm.core.storage.backup`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.storage.backup.manifest import read_manifest, write_manifest
from rvlm.core.storage.files import BackupCorrupt

PLAN_NAME = "plan.yaml"
KEYS_NAME = "keys.rvk"


def prepare_backup_dir(directory: Path, plan: Plan, batch_size: int) -> tuple[dict[str, Any], bool]:
    """Create the backup dir for ``plan`` or reopen it. Returns (manifest, created).

    A directory made for another plan (fingerprint) is refused; one that holds anything but
    an rvlm backup is refused. On reopen the manifest's batch size wins (batch numbers in
    the journal and backups depend on it).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RvlmError(f"backup dir {directory} is a file")
    if directory.exists() and any(directory.iterdir()):
        if not (directory / "manifest.json").exists():
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
    directory.mkdir(parents=True, exist_ok=True)
    plan.write(directory / PLAN_NAME)
    manifest = {
        "plan_fingerprint": plan.fingerprint,
        "source_index": plan.source_index,
        "target_index": plan.target_index,
        "storage_type": plan.source_schema.storage_type,
        "batch_size": batch_size,
        "created_at": time.time(),
    }
    write_manifest(directory, manifest)
    return manifest, True


def load_backup_plan(directory: Path) -> Plan:
    """The plan a backup dir was made for, checked against its manifest."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RvlmError(f"backup dir {directory} does not exist")
    manifest = read_manifest(directory)
    try:
        plan = Plan.load(directory / PLAN_NAME)
    except FileNotFoundError:
        raise BackupCorrupt(f"{directory / PLAN_NAME}: plan copy missing") from None
    if manifest.get("plan_fingerprint") != plan.fingerprint:
        raise BackupCorrupt(f"{directory}: plan.yaml does not match the manifest's fingerprint")
    return plan


__all__ = ["KEYS_NAME", "PLAN_NAME", "load_backup_plan", "prepare_backup_dir"]
