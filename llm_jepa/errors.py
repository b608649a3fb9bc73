"""The error every configuration check raises, in a module of its own so that any module can
raise it without importing the configuration (and what that imports)."""


class ConfigError(ValueError):
    """Raised with every problem of a configuration at once, one per line."""
