"""An example's lineage as a rich tree for the terminal."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from rich.tree import Tree


def _label(node: dict[str, Any], *, focus: bool = False) -> Text:
    text = Text()
    text.append(f"{node['id']} ", style="bold" if focus else "dim")
    text.append(f"[{node['source']}/{node['status']}, round {node['round']}]")
    if node.get("operation"):
        text.append(f" via {node['operation']}", style="cyan")
    text.append(f"\n{node['instruction'][:160]}")
    for score in node.get("scores", []):
        if score["scorer"] == "judge":
            explanation = (
                (score.get("explanation") or score.get("raw_output") or "").strip().splitlines()
            )
            words = f" — {explanation[-1][:100]}" if explanation else ""
            text.append(f"\n  judge {score['dimension']}: {score['value']}{words}", style="green")
    for rejection in node.get("rejections", []):
        text.append(
            f"\n  rejected at {rejection['stage']}: {rejection['reason']} {rejection['evidence'] or ''}",
            style="red",
        )
    return text


def _descend(branch: Tree, children: list[dict[str, Any]]) -> None:
    for child in children:
        sub = branch.add(_label(child))
        _descend(sub, child.get("children", []))


def render_tree(tree: dict[str, Any]) -> Tree:
    """Ancestors from the seed down to the example, then its descendants and rejected siblings."""
    chain = [*reversed(tree["ancestors"]), tree["example"]]
    root = Tree(_label(chain[0], focus=len(chain) == 1))
    branch = root
    for node in chain[1:]:
        branch = branch.add(_label(node, focus=node is tree["example"]))
    _descend(branch, tree["descendants"])
    for sibling in tree.get("rejected_siblings", []):
        reasons = ", ".join(r["reason"] for r in sibling["rejections"]) or "rejected"
        branch.add(
            Text(f"sibling {sibling['id']} via {sibling['operation']}: {reasons}", style="red dim")
        )
    return root
