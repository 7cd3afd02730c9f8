"""Errors a user can fix. Each message is one line naming what is wrong and the fix; the CLI prints it
without a traceback and exits with status 2. Anything else that escapes is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, files or environment (not a bug in fastadasp)."""


class InvalidOption(UserError, ValueError):
    """An option or argument value that cannot work; the message names the option and the valid range."""
