"""Detects whether other processes used the CPU while a timed region ran (the machine may be shared).

A region is "clean" when the CPU time that other processes used during it, from /proc/stat's machine-wide busy
time minus this process's own CPU time (all threads), stays below `clean_fraction` of the machine's capacity.
Benchmarks take their medians over clean regions only, as the official harness in ../shared/bench does, so that
a neighbour's burst does not count as our cost. On systems without /proc/stat every region is clean.
"""

from __future__ import annotations

import os
import time

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float | None:
  try:
    with open("/proc/stat", encoding="ascii") as f:
      fields = [int(x) for x in f.readline().split()[1:9]]
  except OSError:
    return None
  user, nice, system, _, _, irq, softirq, steal = fields
  return (user + nice + system + irq + softirq + steal) / _TICKS_PER_SECOND


def _own_seconds() -> float:
  times = os.times()
  return times.user + times.system


class TimedRegion:
  """``with TimedRegion() as r: ...`` then `r.seconds` (wall time), `r.others_fraction` and `r.clean`."""

  def __init__(self, clean_fraction: float = 0.10):
    self.clean_fraction = clean_fraction
    self.seconds = 0.0
    self.others_fraction = 0.0
    self.clean = True

  def __enter__(self) -> TimedRegion:
    self._busy, self._own, self._start = _machine_busy_seconds(), _own_seconds(), time.perf_counter()
    return self

  def __exit__(self, *exc) -> bool:
    self.seconds = time.perf_counter() - self._start
    busy = _machine_busy_seconds()
    if busy is not None and self._busy is not None and self.seconds > 0:
      others = (busy - self._busy) - (_own_seconds() - self._own)
      self.others_fraction = max(0.0, others) / (self.seconds * (os.cpu_count() or 1))
      self.clean = self.others_fraction < self.clean_fraction
    return False
