"""The errors every layer raises: one line each, naming what is wrong and what would be valid."""

from __future__ import annotations

from typing import Any


class Rejected(SystemExit):
    """A run refused before it started, after printing its one-line error (``line``): exit code 2.
    A sweep's launcher catches it, records the line as the job's error and goes on."""

    def __init__(self, line: str) -> None:
        super().__init__(2)
        self.line = line


class DataError(Exception):
    """Data can't be prepared or used: a one-line message saying what is wrong and what would fix it."""


class ConfigError(ValueError):
    """A config value is invalid: names the key, the value and what would be valid."""

    def __init__(self, key: str, value: Any, valid: str):
        self.key, self.value, self.valid = key, value, valid
        super().__init__(f"{key}={value!r} is invalid: {valid}")


def positive(key: str, value: float | int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not value > 0:
        valid = "must be a positive number" + (" or null" if allow_none else "")
        raise ConfigError(key, value, valid)


def non_negative(key: str, value: float | int) -> None:
    if value is None or value < 0:
        raise ConfigError(key, value, "must be >= 0")
