"""The command layer: `zsris-rt` and its subcommands, one module each, on top of the library.

Nothing in the library imports from here. `main.py` dispatches, `options.py` holds the options
several commands share, `exit_codes.py` the one exit-status policy every command runs under.
"""
