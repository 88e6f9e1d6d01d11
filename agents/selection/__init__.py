"""Selecting examples: exact and near duplicates, ROUGE-L novelty (in memory, and persistent over the pool), decontamination, diversity."""
