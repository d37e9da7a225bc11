"""The exit codes of every `bertfast` command, and the error that picks the usage code.

    0  EXIT_OK      done
    1  EXIT_FAILED  the command ran and failed on what it was given: a missing or malformed model
                    folder, checkpoint, config or input file, or a run that did not complete
    2  EXIT_USAGE   the command line cannot run as written: argparse's own usage errors, an option
                    that does not apply to the input, a device or optional package this machine lacks
    141             stdout was closed by its reader (`bertfast info --json | head`), as a shell reports SIGPIPE

A leaf module: the corpus job raises UsageError from below the CLI without importing it.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141


class UsageError(ValueError):
    """Arguments that cannot be used together, or an option that does not apply to the input.

    A ValueError naming the argument to Python callers; exit code EXIT_USAGE on the command line."""
