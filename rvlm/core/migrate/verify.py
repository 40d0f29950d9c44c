"""Verify every document a migration rewrote, not a sample: the check before apply (or
``rvlm validate --backup-dir``) says ``succeeded``.

The backup dir holds, for every document the plan rewrote, the digest of what its write held
(:mod:`rvlm.core.redis.docio.verify`). :func:`verify_documents` reads those digests batch by batch
(not the originals) and compares them with the server, one pipelined command per document:
a document that holds something else, or is gone, fails the check and is named. The same pass
over the batches journaled as done is how a resume finds the writes a restarted server lost
(its ``bad_batches`` are restored from the backup and redone).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import redis

from rvlm.core.migrate.collector import fewer_collections
from rvlm.core.migrate.plan import DROP_RECREATE, Plan
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.redis.docio.verify import CHANGED, GONE, OK, UNCHECKED, check_written
from rvlm.core.redis.resp import to_str
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.backup.records import Written, WrittenRef
from rvlm.core.storage.journal import RunState

#: Keys named in a failed check.
SHOWN = 5


@attrs.define
class DocumentsVerified:
    """The outcome of :func:`verify_documents`: documents checked and how many hold what was
    written; the first keys of those that changed or are gone; records without a digest; the
    batches with any document that is not ``ok``; how long the pass took."""

    checked: int = 0
    ok: int = 0
    changed: int = 0
    gone: int = 0
    unchecked: int = 0
    changed_keys: list[bytes] = attrs.field(factory=list)
    gone_keys: list[bytes] = attrs.field(factory=list)
    bad_batches: set[int] = attrs.field(factory=set)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.changed == 0 and self.gone == 0

    def check(self) -> CheckResult:
        """The ``documents`` check of a validation."""
        if self.passed:  # (no rate here: the same run must give the same checks)
            details = f"all {self.ok:,} rewritten documents hold what the migration wrote"
            if self.unchecked:
                details += (f"; {self.unchecked:,} backed up before digests existed were not "
                            "checked")
            return CheckResult(name="documents", passed=True, details=details)
        parts = []
        if self.changed:
            parts.append(f"{self.changed:,} hold something else than the migration wrote (e.g. "
                         f"{', '.join(repr(to_str(k)) for k in self.changed_keys)})")
        if self.gone:
            parts.append(f"{self.gone:,} are gone (e.g. "
                         f"{', '.join(repr(to_str(k)) for k in self.gone_keys)})")
        return CheckResult(name="documents", passed=False,
                           details=f"{' and '.join(parts)}, of {self.checked:,} rewritten "
                                   "documents; the server lost writes or someone changed them: "
                                   "re-run the apply to redo lost batches, or roll back")


def written_refs(reader: BackupReader, batch: int,
                 rewritten: Mapping[int, Mapping[str, Any]]) -> list[WrittenRef]:
    """What each record of ``batch`` says was written, with the journal's corrections: a batch
    redone on a resume may write other values than its first attempt did (the backup keeps
    the first attempt's record; the redo's ``batch_done`` says what changed)."""
    refs = reader.written(batch)
    fixes = rewritten.get(batch)
    if not fixes:
        return refs
    out: list[WrittenRef] = []
    for key, new_key, replaced, written in refs:
        fix = fixes.get(key.hex())
        if fix is not None:
            written = Written(bytes.fromhex(fix[0]), tuple(bytes.fromhex(n) for n in fix[1]))
        out.append((key, new_key, replaced, written))
    return out


def rewritten_entry(written: Written) -> list[Any]:
    """A :class:`Written` as a journal ``rewritten`` value (see :func:`written_refs`)."""
    return [written.digest.hex(), [n.hex() for n in written.names]]


def backup_dirs_file() -> Path:
    """Where applies record their backup dirs: ``backup_dirs.jsonl`` in ``$RVLM_HOME``
    (default ``~/.rvlm``), one ``{"fingerprint", "dir"}`` line per apply, so that
    ``rvlm validate --plan P`` (RedisVL's form, no backup dir) on this machine still checks
    every document. Kept outside Redis: nothing is added to the user's keyspace."""
    return Path(os.environ.get("RVLM_HOME", Path.home() / ".rvlm")) / "backup_dirs.jsonl"


def remember_backup_dir(plan: Plan, directory: Path) -> None:
    """Record where ``plan``'s apply keeps its backup (best effort)."""
    line = json.dumps({"fingerprint": plan.fingerprint, "dir": str(Path(directory).resolve())})
    with contextlib.suppress(OSError):
        path = backup_dirs_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def remembered_backup_dir(plan: Plan) -> Path | None:
    """The backup dir ``plan``'s latest apply on this machine recorded, if it is still there."""
    try:
        lines = backup_dirs_file().read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("fingerprint") == plan.fingerprint:
            path = Path(str(entry.get("dir")))
            if (path / "manifest.json").is_file():
                return path
    return None


#: Documents whose record of what was written an apply keeps in memory for its verification
#: pass (about 250 bytes each): the pass reads the rest back from the backup.
KEPT_DOCUMENTS = 50_000


class WrittenLog:
    """What an apply's transform wrote, batch by batch, as the verification pass reads it
    (:data:`~rvlm.core.storage.backup.records.WrittenRef`: key, new key, replaced, written),
    kept in memory so that the pass does not read those batches back from the backup. Only
    batches whose backup frame this process wrote (so the two hold the same records), and at
    most ``limit`` documents in all: memory stays bounded whatever the number of documents."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = KEPT_DOCUMENTS if limit is None else limit
        self.count = 0
        self.batches: dict[int, list[WrittenRef]] = {}

    def add(self, batch: int, records: Iterable[tuple[Any, ...]]) -> None:
        """Keep ``records`` (the batch's backup records, as written) if there is room."""
        refs = [(r[0], r[1], r[4], r[5] if len(r) > 5 else None) for r in records]
        if self.count + len(refs) <= self.limit:
            self.batches[batch] = refs
            self.count += len(refs)


def verifies(plan: Plan) -> bool:
    """Whether a plan's documents are verified: a drop_recreate plan that rewrites some."""
    return plan.mode == DROP_RECREATE and bool(plan.operations)


def verify_documents(client: redis.Redis, plan: Plan, directory: Path, *,
                     batches: Iterable[int] | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     kept: WrittenLog | None = None) -> DocumentsVerified:
    """Check every record of the backup in ``directory`` (or of ``batches``) against the
    server. Reads one batch of digests at a time, from ``kept`` where the apply kept that
    batch in memory (the same records as its backup frame); the next batch's are read from
    the backup on a thread of their own while the server answers for this one (memory: two
    batches). Runs with fewer garbage collections, as the transform does
    (:func:`~rvlm.core.migrate.collector.fewer_collections`)."""
    started = time.perf_counter()
    reader = BackupReader(directory, plan.fingerprint)
    rewritten = RunState.load(directory).rewritten
    wanted = set(batches) if batches is not None else None
    numbers = [b for b in reader.batch_numbers() if wanted is None or b in wanted]
    storage = plan.target_schema.storage_type
    out = DocumentsVerified()

    def refs_of(b: int) -> list[WrittenRef]:
        mine = kept.batches.get(b) if kept is not None else None
        return mine if mine is not None and b not in rewritten else written_refs(
            reader, b, rewritten)

    with fewer_collections(), \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-verify") as ahead:
        following = ahead.submit(refs_of, numbers[0]) if numbers else None
        for n, b in enumerate(numbers, 1):
            assert following is not None
            refs = following.result()
            following = ahead.submit(refs_of, numbers[n]) if n < len(numbers) else None
            _count(out, b, refs, check_written(client, refs, storage))
            if progress is not None:
                progress(n, len(numbers))
    out.seconds = time.perf_counter() - started
    return out


def _count(out: DocumentsVerified, b: int, refs: list[WrittenRef], outcomes: list[str]
           ) -> None:
    """Add batch ``b``'s outcomes to ``out``."""
    for ref, outcome in zip(refs, outcomes, strict=True):
        if outcome == UNCHECKED:
            out.unchecked += 1
            continue
        out.checked += 1
        if outcome == OK:
            out.ok += 1
            continue
        out.bad_batches.add(b)
        key = ref[1] or ref[0]
        if outcome == CHANGED:
            out.changed += 1
            if len(out.changed_keys) < SHOWN:
                out.changed_keys.append(key)
        elif outcome == GONE:
            out.gone += 1
            if len(out.gone_keys) < SHOWN:
                out.gone_keys.append(key)


__all__ = ["KEPT_DOCUMENTS", "DocumentsVerified", "WrittenLog", "backup_dirs_file",
           "remember_backup_dir", "remembered_backup_dir", "rewritten_entry", "verifies",
           "verify_documents", "written_refs"]
