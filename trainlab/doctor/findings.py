"""A finding of the doctor: what went wrong (kind, severity, message), where and when, its numbers, fixes to paste.

    Diagnosis("plateau", "warning", 120, "train_loss", "training loss flat at ...", {"loss": 2.3}, ["clip=norm"])

Each fix is an override string that can be pasted after the run's own overrides (fixes.py computes them).
`to_json()` / `from_json()` are the form of diagnosis.json; `brief()` the form summary.json lists.
"""
import math
from dataclasses import asdict, dataclass, field

KINDS = ("nonfinite", "spike", "plateau", "overfitting", "smell", "vanishing", "exploding", "dead_relu", "saturated",
         "skipped", "rollback", "initial_loss", "verdict")
SEVERITIES = ("error", "warning", "info")
SIGNAL_KINDS = ("vanishing", "exploding", "dead_relu", "saturated")  # what a signal-health pass flags


@dataclass
class Diagnosis:
    """One finding; step None = at start (a config smell)."""
    kind: str
    severity: str
    step: int | None
    where: str
    message: str
    evidence: dict = field(default_factory=dict)
    fixes: list = field(default_factory=list)
    fixes_of: str = ""  # "nonfinite at step 7": these fixes were shown with that finding (shown once, not twice)

    def __post_init__(self):
        self.evidence = {k: v for k, v in self.evidence.items() if _number(v) is not None}  # never nan as evidence

    def to_json(self):
        """A dict for diagnosis.json: evidence numbers as floats, non-finite ones (never written as NaN) as null."""
        out = asdict(self)
        out["evidence"] = {k: _number(v) for k, v in self.evidence.items()}
        return out

    @classmethod
    def from_json(cls, d):
        return cls(**{k: d.get(k) for k in ("kind", "severity", "step", "where", "message")},
                   evidence=dict(d.get("evidence") or {}), fixes=list(d.get("fixes") or []),
                   fixes_of=str(d.get("fixes_of") or ""))

    def brief(self):
        return {"kind": self.kind, "severity": self.severity, "step": self.step, "where": self.where}


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v if isinstance(v, str) else None
    return float(v) if math.isfinite(v) else None
