"""The agents of a round: generate, evolve, answer, critique, rewrite and select examples, with what they score and select by."""
