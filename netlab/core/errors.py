"""One error type for everything netlab refuses or fails at, with stable exit codes.

The CLI turns a NetlabError into its message on stderr and its exit code, in one place.
"""

from __future__ import annotations

# Exit codes: 0 ok, 1 a check or a kernel step failed, 2 bad input, usage, or missing privilege.
EXIT_FAILED = 1
EXIT_USAGE = 2


class NetlabError(Exception):
    """An error with a one-line message meant for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class ScenarioError(NetlabError):
    """Bad input in a scenario file: always names the file and the line, exit 2."""

    def __init__(self, path: str, line: int | None, message: str):
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}", EXIT_USAGE)
        self.path = path
        self.line = line


class KernelError(NetlabError):
    """A kernel step failed (after rollback), exit 1."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_FAILED)
