"""What a reader of real data read and skipped: every pipeline counts bad records, never dies on one."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReadStats:
    files: int = 0  # files read
    records: int = 0  # records yielded (documents, interactions, ...)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    unit: str = "records"  # what a record is, for messages

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def __str__(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{self.records} {self.unit} from {self.files} files (skipped: {skipped})"
