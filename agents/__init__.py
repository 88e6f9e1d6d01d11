"""The agents of a round: generate, evolve, answer, critique, rewrite and select examples, and the models they call."""
