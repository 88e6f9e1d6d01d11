"""How the CPU engines' worker threads wait between parallel regions: asleep, not spinning.

torch and CTranslate2 each ship a GNU OpenMP whose idle workers spin on a core for a
while before they sleep. On a machine of its own that saves a wake-up; beside any other
busy process it is a disaster, because the spinning threads take the cores the working
ones need: beside other busy processes, passive threads made CTranslate2 and torch
several times faster on the 2-core machine (the README's "Idle threads sleep" table,
`bench/thread_wait.py`); alone, spinning is a little faster.

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
