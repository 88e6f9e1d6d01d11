"""How the CPU engines' worker threads wait between parallel regions: asleep, not spinning.

torch and CTranslate2 each ship a GNU OpenMP whose idle workers spin on a core for a
while before they sleep. On a machine of its own that saves a wake-up; beside any other
busy process it is a disaster, because the spinning threads take the cores the working
ones need. Measured on the 2-core machine (SmolLM2-135M, CTranslate2 float32, two
threads): alone, 40 tokens/s spinning and 33 passive; beside one busy process, 12 and
23; beside two other model processes, 0.2 and 11. A LoRA step of torch on two threads
beside two model processes: 1.9 steps/s spinning, 6.5 passive (alone: the same).

A daemon shares its machine with its trainer, the user's other jobs and often a second
project, so passive is the default. The variable is read once, when each OpenMP library
loads, so it is set before torch or ctranslate2 is imported; a value the user exported
(`OMP_WAIT_POLICY=ACTIVE` for a machine of its own) is kept, and child processes (the
trainer) inherit it.
"""

from __future__ import annotations

import os

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"


def sleep_idle_threads() -> str:
    """Make idle OpenMP workers sleep unless the user chose otherwise; the policy in force."""
    return os.environ.setdefault(WAIT_POLICY_VARIABLE, DEFAULT_WAIT_POLICY)
