"""Errors that are the user's to fix: entry points print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input (config value, environment name, checkpoint file): say what is wrong in one line."""
