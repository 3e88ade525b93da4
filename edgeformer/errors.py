"""Errors a user can act on. The CLI prints these as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: the message names the value, what is allowed, and the fix."""

    exit_code = 2


class BudgetError(Exception):
    """The artifact was built but missed one or more of its target's budgets.

    `result` is the pipeline's BuildResult (manifest with every budget check).
    """

    exit_code = 3

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
