"""RedisVL's migration files, recognised so that rvlm can say what a file is and what to do
instead, rather than "manifest missing" or "index has no plan_path".

What ``rvl migrate`` (redisvl 0.28) writes, as seen by running it:

* a backup dir: per index ``migration_backup_<index>_<hash>.header`` (JSON: ``index_name``,
  ``phase``, ``fields``, batch counters) and ``.data`` (length-prefixed *pickled* batches of
  original vectors), with ``.manifest`` and ``_worker<N>`` shards when it ran with workers.
  Only the JSON header is ever read here; the pickled data never is.
* a plan (``rvl migrate plan``): ``source`` (``index_name``, snapshots), ``requested_changes``
  (the patch), ``merged_target_schema``, ``diff_classification``; no ``rvlm`` section.
* a batch plan (``rvl migrate batch-plan``): ``batch_id``, ``mode``, ``failure_policy``,
  ``requires_quantization``, ``shared_patch``, ``indexes`` (``name``, ``applicable``,
  ``skip_reason``) and ``created_at``; no per-index plans.
* a batch state (``rvl migrate batch-apply``): ``batch_id``, ``plan_path``, ``backup_dir``,
  ``started_at``, ``updated_at``, ``completed`` (name, status, ...), ``current_index`` and
  ``remaining``; no ``version``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_BACKUP_FILE = re.compile(r"^migration_backup_.+\.(header|data|manifest)$")


def redisvl_backup(directory: Path) -> str | None:
    """A description of ``directory`` when it holds RedisVL backup files, else None."""
    try:
        files = sorted(p for p in Path(directory).iterdir() if _BACKUP_FILE.match(p.name))
    except OSError:
        return None
    if not files:
        return None
    described = []
    for header in (p for p in files if p.suffix == ".header"):
        try:
            data = json.loads(header.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("index_name"), str):
            described.append(f"{data['index_name']!r} (phase {data.get('phase', 'unknown')})")
    what = f" of index {', '.join(described)}" if described else ""
    return (f"{directory} is a RedisVL backup dir (rvl migrate: migration_backup_*.header/.data"
            f"{what}, original vectors pickled)")


def is_redisvl_plan(data: Any) -> bool:
    """True for a plan ``rvl migrate plan`` wrote."""
    return (isinstance(data, dict) and "rvlm" not in data and "diff_classification" in data
            and "merged_target_schema" in data)


def redisvl_plan_advice(data: dict[str, Any], source: str) -> str:
    """What a RedisVL plan is and the rvlm command that plans the same change."""
    src = data.get("source")
    index = src.get("index_name") if isinstance(src, dict) else None
    return (f"{source} is a RedisVL plan (rvl migrate plan): rvlm applies only its own plans "
            f"(each change's plugin, operations and fingerprint); plan the same change with "
            f"rvlm from its requested_changes (save them as a patch file): rvlm plan -i "
            f"{index or '<index>'} --schema-patch PATCH")


def is_redisvl_batch_plan(data: Any) -> bool:
    """True for a batch plan ``rvl migrate batch-plan`` wrote (its index entries have no
    per-index plan, and it has rvl's ``shared_patch``)."""
    if not isinstance(data, dict) or not isinstance(data.get("indexes"), list):
        return False
    entries = [e for e in data["indexes"] if isinstance(e, dict)]
    return "shared_patch" in data and "selection" not in data and not any(
        "plan_path" in e for e in entries)


def redisvl_batch_plan_advice(data: dict[str, Any], source: str) -> str:
    """What a RedisVL batch plan is and the rvlm command that plans the same run."""
    names = [str(e.get("name")) for e in data.get("indexes", [])
             if isinstance(e, dict) and e.get("applicable", True)]
    listed = ",".join(names) or "<index,...>"
    return (f"{source} is a RedisVL batch plan (rvl migrate batch-plan): it holds no per-index "
            f"plans for rvlm to apply; plan the same run with rvlm from its shared_patch "
            f"(save it as a patch file): rvlm batch plan --schema-patch PATCH --indexes "
            f"{listed}")


def is_redisvl_batch_state(data: Any) -> bool:
    """True for a batch state ``rvl migrate batch-apply`` wrote."""
    return (isinstance(data, dict) and "version" not in data and "remaining" in data
            and "completed" in data and "batch_id" in data)


def redisvl_batch_state_advice(data: dict[str, Any], source: str) -> str:
    """What a RedisVL batch state is and what to do instead."""
    remaining = [str(n) for n in data.get("remaining") or []]
    rest = (f"; to migrate the remaining indexes with rvlm: rvlm batch plan --indexes "
            f"{','.join(remaining)} ..." if remaining else "")
    return (f"{source} is a RedisVL batch state (rvl migrate batch-apply); rvlm cannot resume "
            f"rvl's run: finish it with rvl migrate batch-resume --state {source}{rest}")


__all__ = ["is_redisvl_batch_plan", "is_redisvl_batch_state", "is_redisvl_plan",
           "redisvl_backup", "redisvl_batch_plan_advice", "redisvl_batch_state_advice",
           "redisvl_plan_advice"]
