"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class UserError(Exception):
    """Bad input, a missing file, an unreachable hub, a broken plugin: something the user can fix."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if empty), for one-line error reports."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
