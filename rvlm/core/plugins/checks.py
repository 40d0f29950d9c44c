"""Validation results: what ``validate`` hooks return and reports carry."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class CheckResult:
    """One named check after a migration: passed or not, with one line of detail."""

    name: str
    passed: bool
    details: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "passed": self.passed}
        if self.details:
            out["details"] = self.details
        return out
