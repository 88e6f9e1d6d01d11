"""Training the student: SFT and preference methods with peft, the held-out suite, the gate and promotion, weak-to-strong."""
