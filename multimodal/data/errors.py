"""The one error type for data that cannot be used (as opposed to config
mistakes): the pipeline counts these per `reason` when
config.input.on_error = 'skip', and names the record otherwise."""
from __future__ import annotations


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
