"""What every agent's outcome carries: rejections with reasons, and the model usage it cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from evoinstruct.agents.models.base import Result
from evoinstruct.store.records import Rejection


@dataclass
class AgentOutcome:
    """Rejections, model calls, tokens and failures by kind; agents subclass it with what they keep."""

    rejections: list[Rejection] = field(default_factory=list)
    calls: int = 0
    tokens: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def reasons(self) -> Counter[str]:
        """Rejection counts per reason."""
        return Counter(r.reason for r in self.rejections)

    def count(self, result: Result) -> bool:
        """Count one model call; True when it produced an answer."""
        self.calls += 1
        if not result.ok:
            self.failures[result.kind] += 1
            return False
        self.tokens += result.prompt_tokens + result.completion_tokens
        return True
