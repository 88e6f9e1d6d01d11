"""How the in-process backend hears from a running model: between tokens and between layers.

`StopOnCancel` is a transformers StoppingCriteria called after every decoding step: it counts
the new tokens of rows still generating on the call's activity ticket (the live view's
tokens/s) and ends generation when the call's cancel flag is set (a stop request: the daemon
cancelled the step). One decoding step of a large batch can take seconds on a busy CPU, so
`check_between_layers` also checks the flag before every layer of the model's stack: a set
flag ends the forward pass in flight within a layer. Imported by the backend when it loads a
model, since it imports transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from evoinstruct.models.activity import Ticket, current_ticket
from evoinstruct.models.cancel import CancelFlag


class StopOnCancel(StoppingCriteria):
    """Stop every row when `cancel` is set; count decoded tokens on `ticket` meanwhile."""

    def __init__(self, cancel: CancelFlag, ticket: Ticket | None, eos_token_id: int | None) -> None:
        self.cancel = cancel
        self.ticket = ticket
        self.eos_token_id = eos_token_id
        self.ended: torch.Tensor | None = None  # rows that have written their end token

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        rows = input_ids.shape[0]
        if self.ticket is not None:
            if self.ended is None:
                self.ended = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
            self.ticket.add_tokens(int((~self.ended).sum()))
            if self.eos_token_id is not None:
                self.ended |= input_ids[:, -1] == self.eos_token_id
        stop = self.cancel.is_set()
        return torch.full((rows,), stop, dtype=torch.bool, device=input_ids.device)


def stop_on_cancel(cancel: CancelFlag, eos_token_id: int | None) -> StoppingCriteriaList:
    """`stopping_criteria` for one generate call: this call's cancel flag and ticket."""
    return StoppingCriteriaList([StopOnCancel(cancel, current_ticket(), eos_token_id)])


def check_between_layers(model: torch.nn.Module, current: Callable[[], CancelFlag | None]) -> None:
    """Before each layer of the model's stacks (the items of its ModuleLists: a transformer's
    decoder layers), raise Cancelled if the flag of the call running now is set."""

    def check(module: torch.nn.Module, args: Any) -> None:
        flag = current()
        if flag is not None:
            flag.check()

    for stack in [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]:
        for layer in stack:
            layer.register_forward_pre_hook(check)
