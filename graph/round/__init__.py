"""One round: what LangGraph compiles (state, dependencies, nodes, wiring)."""
