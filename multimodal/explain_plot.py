"""A picture of one explained prediction (multimodal/explain.py) as PNG.

  e = predictor.explain(images=[...], audio=[...], questions=[...])
  multimodal.explain_plot.plot(e, 0, 'why.png')

Panels, left to right: the image the model read with its gradient x input
saliency over it (red raises the score, blue lowers it), the log-mel
spectrogram with the per-frame saliency below it, and a bar chart of each
modality's Shapley value (nats) labelled with its share. Needs matplotlib
(`pip install -e '.[explain]'`).
"""
from __future__ import annotations

import numpy as np


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('Plotting an explanation needs matplotlib: pip install '
                      '-e ".[explain]" (or pip install matplotlib).') from e
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _symmetric(x: np.ndarray) -> float:
  return float(np.max(np.abs(x))) or 1.0


def plot(explanation, index: int, path: str, *, title: str | None = None,
         dpi: int = 80) -> str:
  """Writes example `index` of `explanation` to the PNG `path`; returns it.

  title: default the question (if any), the explained target and its score.
  """
  e = explanation
  if not 0 <= index < len(e.targets):
    raise IndexError(f'index {index} is outside the {len(e.targets)} '
                     'explained examples.')
  plt = _pyplot()
  media = [m for m in e.modalities if m in e.inputs]
  panels = len(media) + 1
  fig = plt.figure(figsize=(3.2 * panels, 3.4))
  grid = fig.add_gridspec(2, panels, height_ratios=(4, 1), hspace=0.35)
  for col, m in enumerate(media):
    x = np.asarray(e.inputs[m][index], np.float32)
    sal = e.saliency.get(m)
    sal = None if sal is None else np.asarray(sal[index], np.float32)
    if x.ndim == 3:  # image [S, S, C] in [-1, 1]
      ax = fig.add_subplot(grid[:, col])
      pixels = np.clip((x + 1) / 2, 0, 1)
      ax.imshow(pixels[..., 0] if x.shape[-1] == 1 else pixels,
                cmap='gray', vmin=0, vmax=1)
      if sal is not None:
        # Colour by sign, opacity by magnitude: the digit shows through
        # where the saliency is small.
        lim = _symmetric(sal)
        rgba = plt.get_cmap('bwr')((sal / lim + 1) / 2)
        rgba[..., 3] = 0.85 * np.abs(sal) / lim
        ax.imshow(rgba)
      ax.set_title(f'{m}: gradient x input', fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
    elif x.ndim == 2:  # log-mel [T, F]
      ax = fig.add_subplot(grid[0, col])
      ax.imshow(x.T, origin='lower', aspect='auto', cmap='magma')
      ax.set_title(f'{m}: log-mel, frame saliency', fontsize=9)
      ax.set_ylabel('mel bin', fontsize=8)
      ax.set_xticks([])
      if sal is not None:
        below = fig.add_subplot(grid[1, col], sharex=ax)
        frames = np.arange(len(sal))
        below.bar(frames, sal, width=1.0,
                  color=np.where(sal >= 0, 'tab:red', 'tab:blue'))
        below.axhline(0, color='k', linewidth=0.5)
        below.set_xlabel('frame', fontsize=8)
        below.tick_params(labelsize=7)
    else:
      raise ValueError(f'No picture for {m} inputs of shape {x.shape}.')
  ax = fig.add_subplot(grid[:, -1])
  phi = np.asarray(e.shapley[index], np.float32)
  share = np.asarray(e.shares[index], np.float32)
  ax.bar(range(len(phi)), phi,
         color=np.where(phi >= 0, 'tab:red', 'tab:blue'))
  ax.axhline(0, color='k', linewidth=0.5)
  ax.set_xticks(range(len(phi)))
  ax.set_xticklabels([f'{m}\n{100 * s:.0f}%' for m, s in
                      zip(e.modalities, share)], fontsize=8)
  ax.set_title('Shapley value (nats), share', fontsize=9)
  ax.tick_params(axis='y', labelsize=7)
  if title is None:
    question = f'{e.prompts[index]} -> ' if e.prompts else ''
    title = (f'{question}{e.targets[index]!r}   log p {e.score[index]:.2f}, '
             f'with no media {e.baseline[index]:.2f}')
  fig.suptitle(title, fontsize=10)
  fig.savefig(path, dpi=dpi, bbox_inches='tight')
  plt.close(fig)
  return path
