"""absl flag parsing for the command line, with every parse error as one `ConfigError` line.

absl and ml_collections' config_flags parse the command line; on failure absl prints a multi-line "FATAL Flags
parsing error" (or a traceback, for an unknown config key) and exits with 1. `parse_flags` is the `flags_parser` of
`absl.app.run` that turns each failure into ``error: <flag>: <problem>`` with exit status 2 instead, reading what it
needs from the exception and from absl's own parse of the two flags a report depends on (`--config`, `--verbose`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re

import ml_collections
from absl import flags

from hal_jax import errors

# absl's wording of a bad flag value (absl.flags.IllegalFlagValueError): "flag --<name>=<value>: <problem>".
_BAD_VALUE = re.compile(r"flag --([^=]+)=(.*?): ", re.DOTALL)
_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string"}


@dataclasses.dataclass(frozen=True)
class _Early:
  """The flags that shape an error report, parsed by absl alone (everything else ignored)."""
  config: str | None = None
  verbose: bool = False


def _early_flags(argv: list[str]) -> _Early:
  """`--config` (as a plain string) and `--verbose` of `argv`, parsed by absl with every other flag ignored."""
  early = flags.FlagValues()
  flags.DEFINE_string("config", None, "", flag_values=early)
  flags.DEFINE_bool("verbose", False, "", flag_values=early)
  try:
    early(argv, known_only=True)
  except flags.Error:
    return _Early()
  return _Early(config=early.config, verbose=early.verbose)


def _root_message(error: BaseException) -> str:
  """The message of the innermost exception in `error`'s chain that has one (the original problem)."""
  message = str(error)
  cause = error.__cause__ or error.__context__
  while cause is not None:
    if str(cause):
      message = str(cause)
    cause = cause.__cause__ or cause.__context__
  return message


def _in_chain(error: BaseException, kind: type[BaseException]) -> BaseException | None:
  """The innermost exception of type `kind` in `error`'s chain, or None."""
  found = None
  while error is not None:
    if isinstance(error, kind):
      found = error
    error = error.__cause__ or error.__context__
  return found


def _config_file_error(argument: str, error: BaseException | None) -> errors.ConfigError:
  """Why ``--config=<argument>`` gives no config: a missing file, or what loading it raised."""
  where = f"--config={argument}"
  if not os.path.isfile(argument.split(":", 1)[0]):
    return errors.ConfigError(where, "config file not found")
  return errors.ConfigError(where, f"cannot load the config file ({_root_message(error)})" if error is not None
                            else "get_config() did not return a ConfigDict")


def _unknown_key(argument: str, key: str) -> errors.ConfigError:
  """``--config.<key>`` names no key of the config: say so, with the closest key."""
  config = flags.FLAGS["config"].parser.parse(argument)
  close = difflib.get_close_matches(key, list(config.keys()), n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return errors.ConfigError(f"--config.{key}", f"unknown config key {key!r}{hint}")


def _bad_value(error: flags.IllegalFlagValueError) -> errors.ConfigError:
  """A flag (or config key) given a value it cannot take."""
  match = _BAD_VALUE.match(str(error))
  if match is None:
    return errors.ConfigError("command line", _root_message(error))
  name, value = match.groups()
  if name == "config":
    return errors.ConfigError(f"--config={value}", _root_message(error))
  expected = _TYPE_NAMES.get(flags.FLAGS[name].parser.flag_type()) if name in flags.FLAGS else None
  if expected is None:
    return errors.ConfigError(f"--{name}", _root_message(error))
  return errors.ConfigError(f"--{name}", f"expected {expected}, got {value!r}")


def _flag_error(error: Exception, early: _Early) -> errors.ConfigError:
  """The one-line ConfigError for `error`, raised by absl or config_flags while parsing the command line."""
  if isinstance(error, flags.UnrecognizedFlagError):
    name = error.flagname
    if name.startswith("config."):  # With a --config, config_flags defines a flag for every override it sees.
      return errors.ConfigError(f"--{name}", "overrides a config key, but no --config=FILE comes before it")
    close = difflib.get_close_matches(name, list(flags.FLAGS), n=1)
    return errors.ConfigError(f"--{name}", f"unknown flag (did you mean --{close[0]}?)" if close else "unknown flag")
  if isinstance(error, flags.IllegalFlagValueError):
    return _bad_value(error)
  missing_key = _in_chain(error, KeyError)
  if missing_key is not None and early.config is not None:
    return _unknown_key(early.config, str(missing_key.args[0]))
  if early.config is not None and not isinstance(error, flags.Error):
    return _config_file_error(early.config, error)  # The file raised while loading (or is missing).
  match = re.search(r"flag --([\w.\-]+)", str(error))
  where = f"--{match.group(1)}" if match else "command line"
  if str(error).startswith("Missing value for flag"):
    return errors.ConfigError(where, "missing value (write --name=value)")
  return errors.ConfigError(where, _root_message(error))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run`'s `flags_parser`), every error one line with exit status 2."""
  early = _early_flags(argv)
  with errors.exit_on_bad_input(verbose=early.verbose):
    try:
      remaining = flags.FLAGS(argv)
    except Exception as error:  # pylint: disable=broad-except  (flags, config files and overrides are input)
      raise _flag_error(error, early) from error
    config = flags.FLAGS["config"].value
    if early.config is not None and not isinstance(config, ml_collections.ConfigDict):
      # config_flags defers the error of an unreadable file until the config is used.
      raise _config_file_error(early.config, _load_error(config))
  return remaining


def _load_error(config: object) -> BaseException | None:
  """What config_flags' stand-in for an unloadable config raises when used, or None for another object."""
  try:
    config.lock()
  except OSError as error:
    return error
  except AttributeError:
    pass
  return None
