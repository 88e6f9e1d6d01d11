"""What `evoinstruct status` reports: pool counts, rounds, the active model, the daemon."""

from __future__ import annotations

from typing import Any

from evoinstruct.graph.project import Project


def status_report(proj: Project) -> dict[str, Any]:
    """What `status --json` prints; plain sqlite3 reads, so it is fast on a large pool.

    `cost` totals every round's tokens and, where models have prices, cost (see cli.costs):
    a running round's finished steps included; `daemon.activity` adds what the models of
    the step running now have done (calls, tokens), in-process models' tokens as decoded.
    """
    from evoinstruct.cli import costs
    from evoinstruct.graph.daemon.liveness import with_liveness
    from evoinstruct.store import stats

    prices = costs.load_prices(proj.config_path)
    conn = stats.connect_readonly(proj.pool_path)
    try:
        pool = stats.pool_stats(conn)
        active = stats.active_history(conn)[-1]
        daemon = stats.daemon_info(conn)
        # Summed per config in SQL: one row per config, however many rounds ran with it.
        usage = stats.round_usage_totals(conn)
        if usage is None:  # not migrated yet (status cannot migrate a pool read-only)
            rows = costs.read_rounds(conn)
            usage = rows, len(rows)
    finally:
        conn.close()
    rows, n_rounds = usage
    summary = {**costs.cost_summary(costs.round_costs(rows, prices)), "rounds": n_rounds}
    return {
        "examples": {
            "total": pool["total"],
            "by_status": pool["by_status"],
            "by_source": pool["by_source"],
            "by_round": pool["by_round"],
        },
        "rounds": pool["rounds_finished"],
        "rejections": pool["rejections"],
        "active_model": active,
        "daemon": _with_activity(with_liveness(daemon)),
        "cost": summary,
    }


def _with_activity(daemon: dict[str, Any] | None) -> dict[str, Any] | None:
    """The heartbeat's `activity` (the models' calls and tokens in the step running now) as
    an object, and only while that daemon runs: a dead daemon's last figures say nothing."""
    import json

    if daemon is None:
        return None
    raw = daemon.get("activity")
    activity = json.loads(raw) if isinstance(raw, str) and raw else None
    return {**daemon, "activity": activity if daemon.get("running") else None}
