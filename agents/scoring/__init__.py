"""Scoring examples for the critic: the LLM judge, Deita, IFD, InsTag, model-free statistics and verifiable constraints."""
