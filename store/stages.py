"""The names of a round's stages, defined once.

A stage's name is a protocol: it names the round graph's node, prefixes the
done marks a stage leaves on examples, labels the rejections it records, the
progress events it sends and the funnel's bars. `Stage` is a `StrEnum`, so each
member is equal to (and stored as) the plain string the store, the checkpoints
and the JSON output have always held.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Every stage, in the order items flow through a round (the report's funnel order)."""

    PLAN = "plan"
    GENERATE = "generate"
    EVOLVE = "evolve"
    # The filter's reading of its input: copies and items without output never become examples.
    IMPORT = "import"
    RESPOND = "respond"
    # Evol-Instruct's check of an answered child; it runs inside the respond node and records
    # its rejections under EVOLVE (the funnel and the live view show it apart).
    ELIMINATE = "eliminate"
    CRITIQUE = "critique"
    REWRITE = "rewrite"
    SELECT = "select"
    COMMIT = "commit"
    # The training branch, after commit when the schedule is due.
    TRAIN = "train"
    EVALUATE = "evaluate"
    PROMOTE = "promote"
    WEAK_TO_STRONG = "weak_to_strong"


# The round graph's pipeline, node after node; the training branch follows COMMIT.
PIPELINE: tuple[Stage, ...] = (
    Stage.PLAN,
    Stage.GENERATE,
    Stage.EVOLVE,
    Stage.RESPOND,
    Stage.CRITIQUE,
    Stage.REWRITE,
    Stage.SELECT,
    Stage.COMMIT,
)
# A student trained, evaluated on the held-out suite, promoted if it beat its predecessor.
TRAINING: tuple[Stage, ...] = (Stage.TRAIN, Stage.EVALUATE, Stage.PROMOTE)
