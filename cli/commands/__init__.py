"""The commands of the command line: the only code that prints or exits; thin commands over library functions."""
