"""User-facing errors.

Every error a user can cause (bad file, bad recipe, locked registry...) is a `MixdistillError`: the CLI prints its
message on one line and exits with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class MixdistillError(Exception):
    """An error caused by input or environment, reported to the user as one clear line."""

    exit_code = 2


class RegistryError(MixdistillError):
    """The registry file cannot be used (corrupt, newer schema, locked...)."""


class RegistryLocked(RegistryError):
    """Another process holds the registry for writing."""


class TaskError(MixdistillError):
    """A task or its source data cannot be loaded."""


class RecipeError(MixdistillError):
    """A recipe file is invalid; the message has one line per problem."""
