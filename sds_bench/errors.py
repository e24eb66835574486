"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class UserError(Exception):
    """Bad input, a missing file, an unreachable hub, a broken plugin: something the user can fix."""
