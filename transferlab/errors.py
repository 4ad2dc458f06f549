"""The one kind of error a user can fix: bad input (a constant, a path, the data). Every module raises it;
process.py turns it into one line on stderr and exit code 2. It imports nothing of transferlab, so every
module can import it."""


class UserError(Exception):
    """A problem with what the user gave (constants, data, paths): one line on stderr, exit code 2."""


def check(condition, message):
    """Raise a UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def failure(error):
    """Why a download (or another outside call) failed, in one line: the exception's kind and message (Keras's
    names the URL), not the kind alone."""
    message = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
