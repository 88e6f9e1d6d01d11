"""The daemon: drives rounds, handles signals, locks, pids and detaching."""
