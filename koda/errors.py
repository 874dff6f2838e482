"""Errors a user can act on: the CLI prints them as one line and exits 2, without a traceback."""


class KodaError(Exception):
    """Bad input from the user (config, checkpoint, data, code, hostfile, topology file)."""


class ConfigError(KodaError):
    """A config field or file is invalid; the message names the field and the value."""
