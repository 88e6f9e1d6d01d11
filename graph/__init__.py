"""The state machine and what drives it: the round graph, the daemon, the project and its one validated config."""
