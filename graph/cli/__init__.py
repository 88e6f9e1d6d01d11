"""The command line: the only code that prints or exits; thin commands over library functions."""
