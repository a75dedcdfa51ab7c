"""Errors that are the user's to fix: entry points print them as one line and exit non-zero."""

import sys
from typing import NoReturn


class UserError(Exception):
    """Bad input (config value, environment name, checkpoint file): say what is wrong in one line."""


def exit_with(error: UserError) -> NoReturn:
    """Print the error as one line on stderr and exit with status 2."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
