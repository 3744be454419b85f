"""What a scan returns: one record per parameter, a report over them, and the problems found."""
from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

# The three problem kinds the scanner names (see ScanReport.problems).
NO_GRADIENT = "no-gradient"
NON_FINITE = "non-finite"
ALL_ZERO = "all-zero"


@dataclass
class ParamRecord:
    """Gradient statistics of one parameter.

    ``none`` is True for a trainable parameter whose ``.grad`` is None (then every count is 0).
    ``sumsq`` is the sum of squares of the finite values and ``absmax`` their largest magnitude;
    NaN and infinities are counted, never summed.
    """

    name: str
    dtype: str
    numel: int
    none: bool = False
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zero: int = 0
    sumsq: float = 0.0
    absmax: float = 0.0
    device: str = "cpu"
    # A zero gradient that is healthy by construction (lora_A while its lora_B is still all zero).
    expected_zero: bool = False

    @property
    def norm(self) -> float:
        """L2 norm of the finite values."""
        return math.sqrt(self.sumsq)

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf

    @property
    def all_zero(self) -> bool:
        return not self.none and self.numel > 0 and self.zero == self.numel

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem:
    kind: str  # NO_GRADIENT, NON_FINITE or ALL_ZERO
    names: list[str]

    def __str__(self) -> str:
        shown = ", ".join(self.names[:5]) + (f" (+{len(self.names) - 5} more)" if len(self.names) > 5 else "")
        return f"{self.kind}: {len(self.names)} parameter(s): {shown}"


@dataclass
class ScanReport:
    """Per-parameter records of one scan; iterate over it for the records."""

    records: list[ParamRecord]
    backend: str  # "cuda", "cpu" or "torch"
    step: int | None = None
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.problems:
            self.problems = find_problems(self.records)

    def __iter__(self) -> Iterator[ParamRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, name: str) -> ParamRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_norm(self) -> float:
        """Global L2 norm over the finite values of every gradient (what clip_grad_norm_ sees, less NaN/Inf)."""
        return math.sqrt(sum(r.sumsq for r in self.records))

    def select(self, pattern: str) -> list[ParamRecord]:
        """Records whose name matches the regular expression ``pattern`` (re.search)."""
        rx = re.compile(pattern)
        return [r for r in self.records if rx.search(r.name)]

    def names(self, kind: str) -> list[str]:
        for p in self.problems:
            if p.kind == kind:
                return list(p.names)
        return []

    def summary(self) -> str:
        head = f"{len(self.records)} trainable parameter(s) scanned ({self.backend})"
        if self.step is not None:
            head = f"step {self.step}: " + head
        if self.ok:
            return head + f", total norm {self.total_norm:.4g}, no problem found"
        return head + "; " + "; ".join(str(p) for p in self.problems)

    def to_dict(self, records: bool = True) -> dict:
        d = {
            "step": self.step,
            "backend": self.backend,
            "total_norm": self.total_norm,
            "problems": [{"kind": p.kind, "names": p.names} for p in self.problems],
        }
        if records:
            d["records"] = [r.to_dict() for r in self.records]
        return d


def find_problems(records: list[ParamRecord]) -> list[Problem]:
    found: dict[str, list[str]] = {NO_GRADIENT: [], NON_FINITE: [], ALL_ZERO: []}
    for r in records:
        if r.none:
            found[NO_GRADIENT].append(r.name)
        elif r.nonfinite:
            found[NON_FINITE].append(r.name)
        elif r.all_zero and not r.expected_zero:
            found[ALL_ZERO].append(r.name)
    return [Problem(k, v) for k, v in found.items() if v]


def log_line(report: ScanReport) -> dict:
    """One JSONL record of a scan: its summary and the records of the parameters with a problem."""
    bad = {n for p in report.problems for n in p.names}
    line = report.to_dict(records=False)
    line["time"] = time.time()
    line["params"] = [r.to_dict() for r in report.records if r.name in bad]
    return line
