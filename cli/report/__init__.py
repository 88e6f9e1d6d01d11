"""The report: plots and one self-contained HTML page from the pool."""
