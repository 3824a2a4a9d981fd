"""Generated spectrograms against the clips' (the 'tts' task's outputs)."""
from __future__ import annotations

import numpy as np

from multimodal import evaluators
from multimodal import registry


@registry.register('evaluator', 'spectrogram')
class Spectrogram(evaluators.Evaluator):
  """Mean log-mel L1 of generated vs real clips over the window, and the
  mean absolute error of the generated length in frames.

  Returns 'tts/mel_l1' and 'tts/length_mae'. The outputs it reads
  (mel_l1, length, target_length; see multimodal/tasks/tts.py) are the
  task's own, so it takes no arguments.
  """

  def __init__(self, task):
    missing = {'mel_l1', 'length', 'target_length'} - set(
        getattr(task, 'OUTPUTS', ()))
    if missing:
      raise ValueError(f'the spectrogram evaluator reads the tts task\'s '
                       f'outputs; task {type(task).__name__} does not make '
                       f'{sorted(missing)}.')

  def __call__(self, outputs, ctx):
    del ctx
    return {'tts/mel_l1': float(np.mean(outputs['mel_l1'])),
            'tts/length_mae': float(np.mean(np.abs(
                outputs['length'].astype(np.int64) -
                outputs['target_length'])))}
