"""The one error type a user can cause (config, paths, data).

The CLI turns a UserError into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: bad config, missing file, malformed data."""
