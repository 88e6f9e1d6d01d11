"""The application: the evoinstruct command, its live view, the report, browsing, the filter command and the demos."""
