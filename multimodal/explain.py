r"""Which modality drove a prediction: exact Shapley values and saliency.

  v = multimodal.load_pretrained('exports/vqa_digits').predictor()
  e = v.explain(images=['seven.png'], audio=['two.ogg'],
                questions=['what number is spoken?'])
  e.targets          # ['2']: the explained (predicted) answer
  e.shapley          # float32 [1, 2]: image, audio contributions (nats)
  e.shares           # float32 [1, 2]: |phi| / sum |phi|
  e.saliency         # {'image': [1, S, S], 'audio': [1, T]}
  multimodal.explain_plot.plot(e, 0, 'why.png')

  # Mean shares per question type over a split (a Markdown table):
  python -m multimodal.explain --pretrained exports/vqa_digits \
      --data_dir data [--split test] [--limit RECORDS] \
      [--plot why.png --plot_record 0 --plot_item 1]

The game. The players are the media modalities of the prediction
(`modalities`, M <= 3 here): a generative model's towers given in the call,
or the media a contrastive model classifies. A coalition S is a modality
present mask, so its value v(S) is the explained score with the modalities
outside S masked exactly as the model masks a missing modality:

* encoder-decoder (captioning, VQA): `present` False for that modality
  (its input zeroed before the tower, its tokens masked out of fusion and
  memory; multimodal/models/encoder_decoder.py). The score is the
  log-probability (nats) of the target text (the predicted answer or
  caption, or one given) under teacher forcing: the sum over its tokens,
  end token included, of log p(token | prompt, earlier tokens, media in S).
  v(none) is the decoder's prior from the prompt (question) alone.
* contrastive (zero-shot): the model embeds each modality on its own, so
  a prediction over several media is a late fusion: each present modality
  m gives logits scale_m * cos(embedding_m, prototype_{m,c}) over the C
  labels (exactly zero_shot()'s, at the pair's learned temperature) and
  the score is log softmax over c of their sum, at the target class (the
  predicted one by default). With one modality it is log of zero_shot()'s
  probability; v(none) is the uniform -log C.

The 2^M coalitions are scored in one batched call, and
phi_m = sum over S without m of |S|! (M - |S| - 1)! / M! (v(S + m) - v(S)),
so sum_m phi_m = v(all) - v(none) exactly (efficiency). A modality an
example lacks (a None entry) is outside every coalition: its phi is 0.
`shares` are |phi_m| / sum_k |phi_k| (all 0 when every phi is 0): how much
of the evidence, for or against the target, each modality carried.

Saliency is gradient x input of v(all) with respect to the preprocessed
arrays the model reads (image pixels float32 [S, S, C] in [-1, 1], log-mel
frames float32 [T, F]), summed over the last axis (colour channels, mel
bins): signed per-pixel [S, S] and per-frame [T] maps. Their totals are
the first-order change of the score from scaling the input from 0 (an
all-zero array, the grey image / the zero log-mel, which is also what the
model's masking feeds its tower) to the input.
"""
from __future__ import annotations

# This module extends multimodal.predictor.Predictor (its fields, pairs and
# cache of jitted functions), so it reads the predictor's private parts.
# pylint: disable=protected-access

import dataclasses
import math
from typing import Mapping, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from multimodal import buckets as buckets_lib
from multimodal import inputs as inputs_lib
from multimodal.inputs import InputError
from multimodal.tasks import text_generation


def coalitions(num: int) -> np.ndarray:
  """bool [2^num, num]: row b has modality m present iff bit m of b is 1
  (row 0: none present, the last row: all)."""
  bits = np.arange(2 ** num)[:, None] >> np.arange(num)[None, :]
  return (bits & 1).astype(bool)


def shapley_values(values: np.ndarray) -> np.ndarray:
  """Exact Shapley values of a game given on every coalition.

  Args:
    values: float [..., 2^M], v(S) for S in `coalitions(M)` order.

  Returns:
    float64 [..., M]: phi_m = sum_{S not containing m} |S|! (M - |S| - 1)!
    / M! * (v(S + m) - v(S)).
  """
  values = np.asarray(values, np.float64)
  num = int(round(math.log2(values.shape[-1])))
  if values.shape[-1] != 2 ** num or num < 1:
    raise ValueError(f'values must be [..., 2^M] with M >= 1, got '
                     f'{values.shape}.')
  masks = coalitions(num)
  size = masks.sum(axis=1)
  out = np.zeros(values.shape[:-1] + (num,))
  for m in range(num):
    for b in np.flatnonzero(~masks[:, m]):
      s = size[b]
      weight = (math.factorial(s) * math.factorial(num - s - 1)
                / math.factorial(num))
      out[..., m] += weight * (values[..., b | (1 << m)] - values[..., b])
  return out


def shares_of(phi: np.ndarray) -> np.ndarray:
  """|phi| / sum |phi| over the last axis; all 0 where every phi is 0."""
  mag = np.abs(np.asarray(phi, np.float64))
  total = mag.sum(axis=-1, keepdims=True)
  return np.where(total > 0, mag / np.where(total > 0, total, 1.0), 0.0)


@dataclasses.dataclass
class Explanation:
  """explain() output for N examples over M modalities (module docstring).

  modalities: the players, e.g. ('image', 'audio').
  targets: what each example's score is about: the answer or caption
    (generative) or the label (contrastive) (list of N str).
  score: float32 [N], v(all): the score with every given modality.
  baseline: float32 [N], v(none).
  coalitions: bool [2^M, M], the present masks scored.
  coalition_scores: float32 [N, 2^M], v(S) per example and coalition.
  shapley: float32 [N, M]; sums to score - baseline.
  present: bool [N, M], which modalities each example has.
  saliency: {modality: float32 [N, ...]}: image [N, S, S] per pixel,
    audio [N, T] per frame (gradient x input, summed over the last axis).
  inputs: {modality: the preprocessed arrays explained [N, ...]}.
  prompts: the question of each example (VQA), else None.
  kind: 'generative' (log-probability of a text) or 'contrastive'
    (log-probability of a label).
  """
  modalities: tuple[str, ...]
  targets: list[str]
  score: np.ndarray
  baseline: np.ndarray
  coalitions: np.ndarray
  coalition_scores: np.ndarray
  shapley: np.ndarray
  present: np.ndarray
  saliency: dict[str, np.ndarray]
  inputs: dict[str, np.ndarray]
  prompts: list[str] | None = None
  kind: str = 'generative'

  @property
  def shares(self) -> np.ndarray:
    """float32 [N, M]: |phi_m| / sum_k |phi_k| (0 when all are 0)."""
    return shares_of(self.shapley).astype(np.float32)


def _finish(modalities, targets, values, present, saliency, inputs, *,
            prompts=None, kind) -> Explanation:
  values = np.asarray(values, np.float32)
  return Explanation(
      modalities=tuple(modalities), targets=list(targets),
      score=values[:, -1], baseline=values[:, 0],
      coalitions=coalitions(len(modalities)), coalition_scores=values,
      shapley=shapley_values(values).astype(np.float32),
      present=np.asarray(present, bool), saliency=saliency, inputs=inputs,
      prompts=prompts, kind=kind)


def _per_position(grads, arrays):
  """Gradient x input summed over the last axis: {m: [B, ...]}."""
  return {m: jnp.sum(grads[m].astype(jnp.float32)
                     * arrays[m].astype(jnp.float32), axis=-1)
          for m in arrays}


def _check_lengths(given: Mapping[str, Sequence], what: str) -> int:
  sizes = {m: len(v) for m, v in given.items()}
  if len(set(sizes.values())) != 1 or not min(sizes.values(), default=0):
    raise InputError('bad_value', f'{what}: give one entry per example in '
                     f'every list (got lengths {sizes}).')
  return next(iter(sizes.values()))


# ------------------------------------------------------------ generative ---


def generative_arrays(predictor, media: Mapping[str, np.ndarray],
                      present: Mapping[str, np.ndarray] | None,
                      prompt: np.ndarray, target: np.ndarray | None = None,
                      *, saliency: bool = True) -> Explanation:
  """Explains an encoder-decoder's text for N examples of arrays.

  Args:
    predictor: a multimodal.predictor.Predictor of a captioning or VQA
      export.
    media: {modality: preprocessed arrays [N, ...]}, the players.
    present: {modality: bool [N]} (False: the example lacks it) or None.
    prompt: int32 [N, P] right-padded prompts (question_prompts,
      caption_prompts).
    target: int32 [N, T] right-padded target ids, eos included; None: the
      greedy prediction from every given modality (predictor.decoding()'s
      max_new_tokens).
    saliency: also compute gradient x input (one backward pass).
  """
  ids = predictor.inputs.tokenizer.ids
  unknown = sorted(set(media) - set(predictor.fields))
  if unknown or not media:
    raise InputError('missing_modality', f'media {sorted(media)}: this model '
                     f'reads a non-empty subset of {list(predictor.fields)}.')
  names = tuple(m for m in predictor.fields if m in media)
  fields = {m: predictor._field(m) for m in names}
  n = len(prompt)
  present = {m: np.ones(n, bool) if present is None or m not in present
             else np.asarray(present[m], bool) for m in names}
  if target is None:
    decoding = predictor.decoding(method='greedy')
    gen = predictor.generate_arrays(media, present, prompt, decoding)
    plen = np.sum(prompt != ids.pad, axis=1)
    target = np.full((n, decoding.max_new_tokens), ids.pad, np.int32)
    for i, p in enumerate(plen):
      row = list(gen.tokens[i, p:p + decoding.max_new_tokens])
      # Through eos; an untrained model may emit the pad id, which cannot
      # be teacher-forced (it marks padding): the text ends before it.
      end = row.index(ids.eos) + 1 if ids.eos in row else len(row)
      if ids.pad in row[:end]:
        end = row.index(ids.pad)
      target[i, :end] = row[:end]
  target = np.asarray(target, np.int32)
  inputs, labels, weights, truncated = (np.asarray(x) for x in (
      text_generation.teacher_forcing(prompt, target,
                                      predictor.model.decoder.max_len,
                                      ids=ids)))
  if truncated.any():
    raise InputError('bad_value', f'Examples {np.flatnonzero(truncated)[:5]} '
                     'do not fit the decoder (prompt plus target longer than '
                     f'its {predictor.model.decoder.max_len} positions): '
                     'shorten the target text.')
  masks = coalitions(len(names))

  def score(model, media, present, inputs, labels, weights):
    memory, mask = model.encode({fields[m]: media[m] for m in names},
                                {fields[m]: present[m] for m in names})
    logits = model.decoder(inputs, memory, mask)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return jnp.sum(token * weights, axis=1)

  def body(state, media, present, inputs, labels, weights):
    model = nnx.merge(predictor._graphdef, state)
    k, b = len(masks), inputs.shape[0]
    # Every coalition as its own rows: [K * B], coalition-major.
    tiled = {m: jnp.tile(media[m], (k,) + (1,) * (media[m].ndim - 1))
             for m in names}
    flags = {m: (jnp.asarray(masks[:, i])[:, None] & present[m][None]
                 ).reshape(-1) for i, m in enumerate(names)}
    rep = lambda x: jnp.tile(x, (k, 1))
    values = score(model, tiled, flags, rep(inputs), rep(labels),
                   rep(weights)).reshape(k, b).T
    out = {'values': values}
    if saliency:
      grads = jax.grad(lambda x: jnp.sum(score(
          model, x, present, inputs, labels, weights)))(
              {m: media[m].astype(jnp.float32) for m in names})
      out['saliency'] = _per_position(grads, {m: media[m] for m in names})
    return out

  key = ('explain', names, inputs.shape[1], saliency)
  fn = predictor._jit(key, f'explain/{"+".join(names)}', body)
  out = buckets_lib.run(
      lambda *a, chunk: fn(predictor._state, *a),
      ({m: media[m] for m in names}, present, inputs.astype(np.int32),
       labels.astype(np.int32), weights.astype(np.float32)),
      predictor.buckets)
  tok = predictor.inputs.tokenizer
  return _finish(names, [tok.decode(t) for t in target], out['values'],
                 np.stack([present[m] for m in names], axis=1),
                 out.get('saliency', {}), {m: media[m] for m in names},
                 kind='generative')


def explain_generative(predictor, images=None, audio=None, *,
                       questions: Sequence[str] | None = None,
                       targets: Sequence[str] | None = None,
                       sample_rate: int | None = None,
                       saliency: bool = True) -> Explanation:
  """Raw inputs -> generative_arrays (see Predictor.explain)."""
  if predictor.task == 'vqa' or (questions is not None
                                 and predictor.task != 'captioning'):
    predictor.require('answer')
    if questions is None:
      raise InputError('bad_value', 'A VQA model explains an answer to a '
                       'question: give questions=[...] (one per example).')
  elif questions is not None:
    raise InputError('bad_value', f'This {predictor.task} model takes no '
                     'questions; leave questions= out.')
  media, present = predictor.media_arrays(images, audio,
                                          sample_rate=sample_rate)
  n = len(next(iter(media.values())))
  if questions is not None:
    _check_lengths({'questions': questions, 'media': range(n)}, 'explain')
    prompt = predictor.question_prompts(questions)
  else:
    prompt = predictor.caption_prompts(n)
  target = None
  if targets is not None:
    _check_lengths({'targets': targets, 'media': range(n)}, 'explain')
    target = predictor.inputs.batch('text', targets)[0]
  out = generative_arrays(predictor, media, present, prompt, target,
                          saliency=saliency)
  out.prompts = list(questions) if questions is not None else None
  return out


# ----------------------------------------------------------- contrastive ---


def explain_contrastive(predictor, labels: Sequence[str],
                        prompts: Sequence[str] | Mapping[str, Sequence[str]]
                        = ('{}',), images=None, audio=None, *,
                        targets: Sequence[str] | None = None,
                        sample_rate: int | None = None,
                        saliency: bool = True) -> Explanation:
  """Explains a contrastive model's zero-shot label (module docstring).

  Args:
    predictor: a Predictor of a contrastive export.
    labels: the C class names.
    prompts: templates for every modality, or {modality: templates}
      (e.g. 'a handwritten {}' for images, 'the word {}' for speech).
    images, audio: lists of raw values, one entry per example (None: the
      example lacks it); at least one list.
    targets: the label to explain per example; None: the predicted one.
    sample_rate: the rate of bare sample arrays in `audio`.
    saliency: also compute gradient x input.
  """
  predictor.require('zero_shot')
  given = {m: v for m, v in (('image', images), ('audio', audio))
           if v is not None}
  if not given:
    raise InputError('bad_value', 'Give images= and/or audio= (lists, None '
                     'for an example that lacks one).')
  n = _check_lengths(given, 'explain')
  names = tuple(m for m in inputs_lib.MODALITIES if m in given)
  if isinstance(prompts, Mapping):
    missing = [m for m in names if m not in prompts]
    if missing:
      raise InputError('bad_value', f'prompts has no templates for {missing}:'
                       ' give {modality: templates} for every medium, or one '
                       'list for all.')
  media, present, protos = {}, {}, {}
  for m in names:
    media[m], present[m] = predictor.inputs.batch(
        m, given[m], sample_rate=sample_rate, allow_missing=True)
    templates = prompts[m] if isinstance(prompts, Mapping) else prompts
    protos[m] = predictor.prototypes(m, labels, templates)
  index = None
  if targets is not None:
    _check_lengths({'targets': targets, 'media': range(n)}, 'explain')
    unknown = sorted({t for t in targets if t not in labels})
    if unknown:
      raise InputError('bad_value', f'targets {unknown} are not among the '
                       f'labels {list(labels)}.')
    index = np.asarray([list(labels).index(t) for t in targets], np.int32)
  return contrastive_arrays(predictor, media, present, protos, index,
                            labels=labels, saliency=saliency)


def contrastive_arrays(predictor, media: Mapping[str, np.ndarray],
                       present: Mapping[str, np.ndarray] | None,
                       prototypes: Mapping[str, np.ndarray],
                       index: np.ndarray | None = None, *,
                       labels: Sequence[str], saliency: bool = True
                       ) -> Explanation:
  """explain_contrastive on preprocessed arrays.

  media: {modality: [N, ...]}; present: {modality: bool [N]} or None;
  prototypes: {modality: float32 [C, D]} (predictor.prototypes); index:
  int [N] the class explained, None: the fused prediction.
  """
  names = tuple(m for m in inputs_lib.MODALITIES if m in media)
  fields = {m: predictor._field(m) for m in names}
  pairs = {m: predictor._pair(m)[0] for m in names}
  n = len(media[names[0]])
  present = {m: np.ones(n, bool) if present is None or m not in present
             else np.asarray(present[m], bool) for m in names}
  masks = jnp.asarray(coalitions(len(names)), jnp.float32)
  predict = index is None
  index = np.zeros(n, np.int32) if index is None else np.asarray(index,
                                                                 np.int32)

  def per_modality(model, protos, media, present):
    """float32 [B, M, C]: each present modality's logits (0 if absent)."""
    out = []
    for m in names:
      emb = model.embed(fields[m], media[m])
      scale = jnp.exp(model.log_scale[pairs[m]].astype(jnp.float32))
      logits = scale * emb @ protos[m].T
      out.append(jnp.where(present[m][:, None], logits, 0.0))
    return jnp.stack(out, axis=1)

  def body(state, protos, media, present, index):
    model = nnx.merge(predictor._graphdef, state)
    logits = per_modality(model, protos, media, present)
    if predict:
      index = jnp.argmax(jnp.sum(logits, axis=1), axis=-1)
    fused = jnp.einsum('km,bmc->bkc', masks, logits)
    logp = jax.nn.log_softmax(fused, axis=-1)
    values = jnp.take_along_axis(logp, index[:, None, None], axis=-1)[..., 0]
    out = {'values': values, 'index': index}
    if saliency:
      def full(x):
        s = jnp.sum(per_modality(model, protos, x, present), axis=1)
        return jnp.sum(jnp.take_along_axis(
            jax.nn.log_softmax(s, axis=-1), index[:, None], axis=-1))
      grads = jax.grad(full)({m: media[m].astype(jnp.float32)
                              for m in names})
      out['saliency'] = _per_position(grads, media)
    return out

  protos = {m: np.asarray(prototypes[m], np.float32) for m in names}
  # The prototypes are an argument, not a constant: one compilation serves
  # any labels of the same count.
  key = ('explain', names, predict, saliency)
  fn = predictor._jit(key, f'explain/{"+".join(names)}', body)
  out = buckets_lib.run(
      lambda *a, chunk: fn(predictor._state, protos, *a),
      ({m: media[m] for m in names}, present, index), predictor.buckets)
  return _finish(names, [labels[i] for i in out['index']], out['values'],
                 np.stack([present[m] for m in names], axis=1),
                 out.get('saliency', {}), {m: media[m] for m in names},
                 kind='contrastive')


# ------------------------------------------------- a split, by group ---


def _zero_shot_settings(config, modality: str):
  """(class names, prompts) of the recorded zero-shot evaluator of
  `modality` (config.evals, type 'zeroshot')."""
  for spec in (config.get('evals') or {}).values():
    if spec.get('type') == 'zeroshot' and spec.get('media') == modality:
      return tuple(spec['class_names']), tuple(spec.get('prompts', ('{}',)))
  raise ValueError(f'The recorded config has no zeroshot evaluator for '
                   f'{modality}: its class names and prompts are needed.')


def explain_split(predictor, config, split: str, *, limit: int | None = None,
                  start: int = 0, records_per_call: int = 24,
                  saliency: bool = False):
  """Explains the model's predictions over a split of its dataset.

  VQA: every question of every record (its media repeated per question),
  grouped by question type; captioning: each record's caption, one group
  'all'; contrastive: the fused zero-shot label of each record's media
  among its zero-shot evaluators' class names and prompts, one group
  'all'.

  Args:
    predictor: a Predictor of the export.
    config: the experiment config (predictor.config, data_dir set).
    split: e.g. 'test'.
    limit: explain records start..limit - 1 (None: to the end).
    start: the first record.
    records_per_call: records per explain call.
    saliency: also compute gradient x input.

  Yields:
    (groups: list of N str, correct: bool [N] (target equals the
    reference answer; VQA only, else None), Explanation of N) per call.
  """
  from multimodal.data import pipeline  # pylint: disable=g-import-not-at-top
  media_fields = {m: predictor._field(m) for m in predictor.fields
                  if m != 'text'}
  vqa = predictor.task == 'vqa'
  typed = vqa and 'question_type' in config.input.fields
  fields = list(media_fields.values()) + (
      ['question', 'answer'] + (['question_type'] if typed else []) if vqa
      else [])
  pre = pipeline.Preprocess(config.input, fields, train=False)
  tokenizer = pre.tokenizer
  source = pipeline.open_source(config.dataset, split)
  count = len(source) if limit is None else min(limit, len(source))
  if not predictor.generative:
    settings = {m: _zero_shot_settings(config, m) for m in media_fields}
    labels = next(iter(settings.values()))[0]
    protos = {m: predictor.prototypes(m, labels, settings[m][1])
              for m in media_fields}
  for first in range(start, count, records_per_call):
    rows = [pre(source[i], np.random.default_rng(0))
            for i in range(first, min(count, first + records_per_call))]
    stack = lambda f: np.stack([r[f] for r in rows])
    media = {m: stack(f) for m, f in media_fields.items()}
    if not predictor.generative:
      yield (['all'] * len(rows), None, contrastive_arrays(
          predictor, media, None, protos, labels=labels,
          saliency=saliency))
      continue
    if not vqa:
      out = generative_arrays(predictor, media, None,
                              predictor.caption_prompts(len(rows)),
                              saliency=saliency)
      yield ['all'] * len(rows), None, out
      continue
    questions = stack('question')
    if questions.ndim == 2:  # one question per record
      questions, answers = questions[:, None], stack('answer')[:, None]
    else:
      answers = stack('answer')
    k = questions.shape[1]
    media = {m: np.repeat(x, k, axis=0) for m, x in media.items()}
    flat = questions.reshape(-1, questions.shape[-1])
    prompt = np.asarray(text_generation.bos_prompt(flat, ids=tokenizer.ids))
    out = generative_arrays(predictor, media, None, prompt,
                            saliency=saliency)
    out.prompts = [tokenizer.decode(q) for q in flat]
    refs = [tokenizer.decode(a) for a in answers.reshape(
        -1, answers.shape[-1])]
    correct = np.asarray([t.strip() == r.strip()
                          for t, r in zip(out.targets, refs)])
    groups = ([tokenizer.decode(t) for t in
               stack('question_type').reshape(-1, questions.shape[-1])]
              if typed else ['all'] * len(flat))
    yield groups, correct, out


def shares_table(parts) -> str:
  """A Markdown table of mean shares, Shapley values and scores per group
  from explain_split's (groups, correct, Explanation) parts."""
  groups, correct, phi, scores, base, names = [], [], [], [], [], None
  for g, c, e in parts:
    names = e.modalities
    groups += g
    correct.append(np.full(len(g), np.nan) if c is None else c)
    phi.append(e.shapley)
    scores.append(e.score)
    base.append(e.baseline)
  groups = np.asarray(groups)
  correct, phi = np.concatenate(correct), np.concatenate(phi)
  scores, base = np.concatenate(scores), np.concatenate(base)
  share = shares_of(phi)
  head = (['group', 'n', 'correct %']
          + [f'{m} share %' for m in names]
          + [f'phi {m}' for m in names] + ['log p all', 'log p none'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  order = sorted(set(groups)) + (['all'] if len(set(groups)) > 1 else [])
  for group in order:
    sel = groups == group if group in set(groups) else np.ones_like(
        groups, bool)
    acc = np.nanmean(correct[sel]) if not np.isnan(correct[sel]).all() \
        else np.nan
    cells = [group, str(int(sel.sum())),
             '-' if np.isnan(acc) else f'{100 * acc:.1f}']
    cells += [f'{100 * share[sel, i].mean():.1f}' for i in range(len(names))]
    cells += [f'{phi[sel, i].mean():+.2f}' for i in range(len(names))]
    cells += [f'{scores[sel].mean():.2f}', f'{base[sel].mean():.2f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  """python -m multimodal.explain: the shares table of an export's split."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import multimodal  # pylint: disable=g-import-not-at-top
  del argv
  args = flags.FLAGS
  export = multimodal.load_pretrained(args.pretrained)
  predictor = export.predictor()
  config = predictor.config
  if args.data_dir:
    config.dataset.data_dir = args.data_dir
  parts = []
  for part in explain_split(predictor, config, args.split, limit=args.limit):
    parts.append(part)
    print(f'explained {sum(len(p[0]) for p in parts)} predictions',
          flush=True)
  print(shares_table(parts))
  if args.plot:
    from multimodal import explain_plot  # pylint: disable=g-import-not-at-top
    (_, _, e), = explain_split(predictor, config, args.split,
                               start=args.plot_record,
                               limit=args.plot_record + 1, saliency=True)
    explain_plot.plot(e, args.plot_item, args.plot)
    print(f'wrote {args.plot}: record {args.plot_record}, item '
          f'{args.plot_item}')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('pretrained', None, 'Export (or workdir) to explain.',
                      required=True)
  flags.DEFINE_string('data_dir', None, 'Where its dataset lives (default: '
                      'the recorded config.dataset.data_dir).')
  flags.DEFINE_string('split', 'test', 'The split to explain.')
  flags.DEFINE_integer('limit', None, 'At most this many records.')
  flags.DEFINE_string('plot', None, 'Also plot one explained prediction to '
                      'this PNG (needs matplotlib).')
  flags.DEFINE_integer('plot_record', 0, 'The record to plot.')
  flags.DEFINE_integer('plot_item', 0, 'Which of its predictions (VQA: the '
                       'question, in the record\'s order).')
  app.run(main)
