"""Running the graph: the round, the daemon, the CLI, the report and the filter command."""
