"""The one error type for data that cannot be used (as opposed to config
mistakes): the pipeline counts these per `reason` when
config.input.on_error = 'skip', and names the record otherwise; and the
one per-reason tally that both the pipeline's skip counts and the
validation before training keep."""
from __future__ import annotations

import dataclasses

# Example messages kept per reason.
MAX_EXAMPLES = 3


class DataError(ValueError):
  """A record (or one of its values) that cannot be used.

  Attributes:
    reason: short snake_case name the skip counts are kept under, e.g.
      'bad_image', 'bad_audio', 'empty_text', 'missing_file', 'missing_key'.
    record: the record's id for messages ('' when not known yet).
    path: the file involved, or None.
  """

  def __init__(self, reason: str, message: str, record: str = '',
               path: str | None = None):
    super().__init__(message)
    self.reason = reason
    self.record = record
    self.path = path

  def __str__(self) -> str:
    where = f'Record {self.record}: ' if self.record else ''
    return f'{where}{self.args[0]}'


@dataclasses.dataclass
class ReasonCounts:
  """Problems counted per reason, with the first few messages of each.

  Attributes:
    counts: reason -> how many.
    examples: reason -> up to MAX_EXAMPLES one-line messages.
  """
  counts: dict[str, int] = dataclasses.field(default_factory=dict)
  examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def add(self, reason: str, message: str) -> bool:
    """Counts one problem; True for the first few of a reason (the ones
    worth a log line: the rest show up in the counts)."""
    self.counts[reason] = self.counts.get(reason, 0) + 1
    shown = self.examples.setdefault(reason, [])
    if len(shown) < MAX_EXAMPLES:
      shown.append(message)
      return True
    return False
