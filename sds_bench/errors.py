"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class UserError(Exception):
    """Bad input, a missing file, an unreachable hub, a broken plugin: something the user can fix."""


def at_least(name: str, value: int, low: int = 1) -> int:
    """`value`, once it is at least `low` (counts such as nsamples, seqlen, batch_size)."""
    if value < low:
        raise UserError(f"{name} must be >= {low}; got {value}")
    return value


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if empty), for one-line error reports."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
