"""The check every reader test shares: a call fails with the project's DataError naming the file and the problem."""

import os

import pytest

from hal_jax.errors import DataError


def assert_data_error(call, where, *fragments):
  """`call()` raises DataError whose `where` is `where` and whose message holds every fragment."""
  with pytest.raises(DataError) as info:
    call()
  assert info.value.where == os.fspath(where)
  for fragment in fragments:
    assert fragment in info.value.what, info.value.what
  return info.value
