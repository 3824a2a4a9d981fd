"""One inference API over an export, a training workdir or a checkpoint step.

  import multimodal
  m = multimodal.load_pretrained('exports/contrastive_digits').predictor()
  emb = m.embed(images=['seven.png'], texts=['a handwritten seven'])
  emb['image'] @ emb['text'].T            # cosine similarity
  m.zero_shot(['zero', 'one', ...], prompts=('a handwritten {}',),
              images=['seven.png']).labels                     # ['seven']

  c = multimodal.load_pretrained('exports/captioning_digits').predictor()
  c.caption(images=['seven.png'])                 # ['a handwritten seven']
  v = multimodal.load_pretrained('exports/vqa_digits').predictor()
  v.answer(['what number is spoken?'], images=[img], audio=[(wave, 8000)])
  # a model with a video tower: videos=['clip_frames/', 'clip.npy', ...]
  s = multimodal.load_pretrained('exports/tts_digits').predictor()
  wave = s.speak('the word seven')   # float32 [N] at s.sample_rate (16 kHz)
  v.explain(images=[img], audio=[(wave, 8000)],
            questions=['what number is spoken?']).shapley  # which modality

Everything is keyed by modality ('image', 'video', 'audio', 'text'), never
by the dataset's field names: the model's fields are found through
model.json and the field kinds (multimodal/data/kinds). Raw inputs
(multimodal/inputs.py: paths, bytes, PIL images, frame directories,
arrays, waveforms at any rate, strings) go through the data pipeline's own
preprocessing. Lower-level methods take preprocessed arrays
(`embed_arrays`, `generate_arrays`), e.g. for scoring a whole dataset from
the pipeline's batches.

Each jitted function is built once and cached; batches are padded to
`buckets` sizes and larger ones chunked (multimodal/buckets.py), so a
stream of odd batch sizes compiles each function at most len(buckets)
times; `compilations` counts the traces per function name.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from multimodal import buckets as buckets_lib
from multimodal import explain as explain_lib
from multimodal import inputs as inputs_lib
from multimodal.data import audio as audio_lib
from multimodal.data import griffin_lim
from multimodal.evaluators import zeroshot as zeroshot_lib
from multimodal.inputs import InputError
from multimodal.models import generate
from multimodal.tasks import text_generation

DEFAULT_BUCKETS = (1, 4, 16, 64)
METHODS = ('greedy', 'sample', 'beam')
# Generation tasks, and the method that answers for each.
TASK_METHODS = {'captioning': 'caption', 'vqa': 'answer', 'tts': 'speak'}
_PROTOTYPE_CACHE = 64
_NEEDS = {'embed': 'a contrastive', 'zero_shot': 'a contrastive',
          'caption': 'a captioning', 'answer': 'a VQA',
          'speak': 'a text-to-speech (tts)'}


@dataclasses.dataclass
class ZeroShot:
  """zero_shot() output for N examples and C labels.

  labels: the predicted label of each example (list of N str).
  index: int32 [N], the predicted label's position in the labels given.
  scores: float32 [N, C], cosine similarity to each label's prototype
    (the mean of its normalised prompt embeddings, renormalised).
  probs: float32 [N, C], softmax over the labels of the model's logit
    scale times the scores (its temperature for that pair).
  """
  labels: list[str]
  index: np.ndarray
  scores: np.ndarray
  probs: np.ndarray


@dataclasses.dataclass
class Generation:
  """generate_arrays() output for N examples.

  texts: the generated text after each prompt, up to eos (list of N str).
  tokens: int32 [N, P + max_new_tokens], prompt then generated ids.
  scores: float32 [N]: log-probability of the generated tokens (greedy,
    sample) or the best beam's length-penalised score (beam).
  """
  texts: list[str]
  tokens: np.ndarray
  scores: np.ndarray


@dataclasses.dataclass(frozen=True)
class Decoding:
  """Decoding options (multimodal/models/generate.py).

  method: 'greedy', 'sample' (softmax(logits / temperature), top_k
    filtered; reproducible for a given seed and batch) or 'beam'
    (beam_size hypotheses, GNMT length penalty alpha).
  max_new_tokens: generation budget; None: the export's config.decoding.
  """
  method: str = 'greedy'
  max_new_tokens: int | None = None
  temperature: float = 1.0
  top_k: int = 0
  beam_size: int = 4
  alpha: float = 0.6
  seed: int = 0

  def checked(self, default_max_new: int, vocab: int) -> 'Decoding':
    bad = []
    if self.method not in METHODS:
      bad.append(f'method {self.method!r} (use one of {METHODS})')
    max_new = self.max_new_tokens or default_max_new
    if not isinstance(max_new, int) or max_new < 1:
      bad.append(f'max_new_tokens {max_new!r} (a positive int)')
    if not self.temperature > 0:
      bad.append(f'temperature {self.temperature!r} (> 0)')
    if not 0 <= self.top_k <= vocab:
      bad.append(f'top_k {self.top_k!r} (0..{vocab})')
    if not 1 <= self.beam_size <= 64:
      bad.append(f'beam_size {self.beam_size!r} (1..64)')
    if not self.alpha >= 0:
      bad.append(f'alpha {self.alpha!r} (>= 0)')
    if bad:
      raise InputError('bad_option', 'Bad decoding options: '
                       + '; '.join(bad) + '.')
    return dataclasses.replace(self, max_new_tokens=max_new)


def _unknown_arguments(unknown: Mapping, allowed: Sequence[str]):
  if unknown:
    raise InputError('unknown_modality', f'Unknown argument(s) '
                     f'{sorted(unknown)}: inputs are given as '
                     f'{", ".join(a + "=" for a in allowed)} (modalities '
                     f'{inputs_lib.MODALITIES}).')


class Predictor:
  """Embeddings, zero-shot labels, captions, answers or speech from one
  model.

  Args:
    pretrained: a multimodal.pretrained.Pretrained (load_pretrained()).
    buckets: batch sizes jitted calls are padded to (see module docstring).
    model: the NNX model to run; default pretrained.build_model().
  """

  def __init__(self, pretrained, *, buckets: Sequence[int] = DEFAULT_BUCKETS,
               model=None):
    if pretrained.config is None:
      raise ValueError(f'{pretrained.path} has no config.json: the '
                       'predictor needs its input settings.')
    self.pretrained = pretrained
    self.config = pretrained.config
    self.task = self.config.get('task')
    self.buckets = buckets_lib.check_buckets(buckets)
    self.model = model if model is not None else pretrained.build_model()
    self._graphdef, self._state = nnx.split(self.model)
    self.compilations = buckets_lib.TraceCounter()
    self._fns = {}
    self._prototypes = collections.OrderedDict()
    self.inputs = inputs_lib.Preprocessor(
        self.config.input, pretrained.tokenizer,
        pretrained.preprocess)
    self.generative = hasattr(self.model, 'decoder')
    config_fields = (self.model_config.get('towers', {}) if self.generative
                     else self.model_config.get('inputs', {}))
    # modality -> the model's fields of that modality, modalities in the
    # order image, audio, text (then any other kinds).
    fields: dict[str, list[str]] = {}
    for field in config_fields:
      modality = inputs_lib.kind_of(field, self.config.input)
      fields.setdefault(modality, []).append(field)
    order = {m: i for i, m in enumerate(inputs_lib.MODALITIES)}
    self.fields = dict(sorted(fields.items(),
                              key=lambda kv: order.get(kv[0], len(order))))

  # ------------------------------------------------------------- about ---

  @property
  def model_config(self) -> dict:
    return self.pretrained.model_config

  @property
  def modalities(self) -> tuple[str, ...]:
    """Modalities the model reads (media towers; plus 'text' for a
    contrastive model's text tower, a decoder's prompts and what a tts
    model says)."""
    out = list(self.fields)
    if (self.generative or self.task == 'tts') and 'text' not in out:
      out.append('text')
    return tuple(out)

  def info(self) -> dict:
    """A JSON-able summary: where from, model, task, modalities, sizes."""
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
        self.pretrained.params))
    out = {'path': self.pretrained.path, 'model': self.model_config['name'],
           'task': self.task, 'modalities': list(self.modalities),
           'parameters': params, 'buckets': list(self.buckets),
           'endpoints': self.endpoints()}
    if 'embed' in out['endpoints']:
      out['embed_dim'] = self.model_config.get('embed_dim')
    if 'speak' in out['endpoints']:
      out['sample_rate'] = self.sample_rate
    return out

  def endpoints(self) -> list[str]:
    """Which of embed, zero_shot, caption, answer, speak this export
    serves."""
    if self.task == 'tts':
      return ['speak']
    if not self.generative:
      return ['embed', 'zero_shot']
    method = TASK_METHODS.get(self.task)
    return [method] if method else ['caption', 'answer']

  def require(self, endpoint: str) -> None:
    """InputError (reason 'unsupported') unless this export serves
    `endpoint` (embed, zero_shot, caption, answer, speak)."""
    if endpoint not in self.endpoints():
      raise InputError(
          'unsupported', f'{endpoint}() needs {_NEEDS[endpoint]} export; '
          f'{self.pretrained.path} is a {self.model_config["name"]} model '
          f'trained for {self.task!r}, which serves '
          f'{", ".join(self.endpoints())}.')

  def _field(self, modality: str) -> str:
    if modality not in inputs_lib.MODALITIES and modality not in self.fields:
      raise InputError('unknown_modality', f'Unknown modality {modality!r}: '
                       f'use one of {inputs_lib.MODALITIES}.')
    if modality not in self.fields:
      raise InputError('missing_modality', f'This model has no {modality} '
                       f'tower; it reads {", ".join(self.fields)}.')
    fields = self.fields[modality]
    if not self.generative:
      towers = {self.model_config['inputs'][f] for f in fields}
      if len(towers) > 1:
        raise InputError('unsupported', f'{modality} fields {fields} map to '
                         f'different towers {sorted(towers)}; embed them '
                         'with model.embed(field, x) directly.')
    return fields[0]

  # --------------------------------------------------------- jitting ---

  def _jit(self, key, name: str, body, **jit_kwargs):
    """The jitted `body(state, ...)`, built once per key; traces counted
    under `name`."""
    if key not in self._fns:
      self._fns[key] = jax.jit(self.compilations.wrap(name, body),
                               **jit_kwargs)
    return self._fns[key]

  # ------------------------------------------------------- embeddings ---

  def preprocess(self, images=None, audio=None, texts=None, *,
                 videos=None, sample_rate: int | None = None, **unknown
                 ) -> dict[str, np.ndarray]:
    """Raw inputs -> {modality: example arrays [N, ...]} as the data
    pipeline makes them in evaluation (see multimodal/inputs.py)."""
    _unknown_arguments(unknown, tuple(inputs_lib.ARGUMENTS.values()))
    given = {'image': images, 'video': videos, 'audio': audio,
             'text': texts}
    out = {}
    for modality, values in given.items():
      if values is None:
        continue
      if not self.generative or modality != 'text':
        self._field(modality)
      out[modality] = self.inputs.batch(modality, values,
                                        sample_rate=sample_rate)[0]
    return out

  def embed_arrays(self, arrays: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """{modality: preprocessed arrays [N, ...]} -> {modality: float32
    [N, D]}, normalised to unit L2 norm as the model does for its
    contrastive loss (so a dot product is a cosine similarity).

    Arrays: image float32 [N, S, S, C] in [-1, 1], audio log-mel float32
    [N, T, F], text int32 [N, L] ids (the shapes `preprocess` returns).
    """
    out = {}
    for modality, x in self.check_arrays(arrays).items():
      if not len(x):
        out[modality] = np.zeros((0, self.model_config['embed_dim']),
                                 np.float32)
        continue
      out[modality] = self._embed_field(self._field(modality), modality, x)
    return out

  def check_arrays(self, arrays: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """embed_arrays' inputs, checked (modality, shape) and cast to the
    example dtype; InputError naming the expected shape otherwise."""
    self.require('embed')
    out = {}
    for modality, x in arrays.items():
      self._field(modality)
      shape, dtype = self.inputs.example_shape(modality)
      x = np.asarray(x)
      if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise InputError('bad_value', f'{modality} arrays must be '
                         f'{np.dtype(dtype).name} [N, '
                         f'{", ".join(map(str, shape))}], got {x.shape}.')
      out[modality] = x.astype(dtype)
    return out

  def _embed_field(self, field: str, modality: str, x: np.ndarray
                   ) -> np.ndarray:
    """model.embed(field, x) over bucket-padded chunks; one jitted function
    per tower (fields sharing a tower, e.g. two caption fields, share it)."""
    tower = self.model_config['inputs'][field]
    fn = self._jit(('embed', tower), f'embed/{modality}',
                   lambda state, x: nnx.merge(self._graphdef, state).embed(
                       field, x))
    return buckets_lib.run(lambda x, chunk: fn(self._state, x), (x,),
                           self.buckets)

  def embed(self, images=None, audio=None, texts=None, *, videos=None,
            sample_rate: int | None = None, **unknown
            ) -> dict[str, np.ndarray]:
    """Embeds raw inputs of any modalities the model has.

    Args:
      images, audio, texts, videos: lists of raw values
        (multimodal/inputs.py), each list its own N.
      sample_rate: the rate of bare sample arrays in `audio`.

    Returns:
      {modality: float32 [N, D]}: L2-normalised embeddings, as the model
      normalises them for its contrastive loss.
    """
    return self.embed_arrays(self.preprocess(
        images=images, audio=audio, texts=texts, videos=videos,
        sample_rate=sample_rate, **unknown))

  # -------------------------------------------------------- zero-shot ---

  def _pair(self, modality: str) -> tuple[int, str]:
    """(pair index, text field) of the pair contrasting `modality` with a
    text field."""
    field = self._field(modality)
    for i, pair in enumerate(self.model_config['pairs']):
      if field in pair:
        other = pair[1] if pair[0] == field else pair[0]
        if inputs_lib.kind_of(other, self.config.input) == 'text':
          return i, other
    raise InputError('unsupported', f'The model contrasts {modality} with no '
                     'text field (its pairs: '
                     f'{self.model_config["pairs"]}), so it has no prompts '
                     'to classify it against.')

  def prototypes(self, modality: str, labels: Sequence[str],
                 prompts: Sequence[str] = ('{}',)) -> np.ndarray:
    """float32 [C, D] class prototypes for classifying `modality`: each
    label's prompts (templates with {} or {name}, optionally {index})
    embedded by the text tower paired with it, averaged and renormalised
    (multimodal.evaluators.zeroshot, as the trainer's evaluation does)."""
    key = (modality, tuple(labels), tuple(prompts))
    if key in self._prototypes:
      self._prototypes.move_to_end(key)
      return self._prototypes[key]
    ids = self.check_prompts(modality, labels, prompts)
    _, text_field = self._pair(modality)
    emb = self._embed_field(text_field, 'text', ids)
    protos = zeroshot_lib.prototypes_from_prompts(
        emb.reshape(len(labels), len(prompts), -1))
    self._prototypes[key] = protos
    if len(self._prototypes) > _PROTOTYPE_CACHE:
      self._prototypes.popitem(last=False)
    return protos

  def check_prompts(self, modality: str, labels: Sequence[str],
                    prompts: Sequence[str]) -> np.ndarray:
    """int32 [C * T, L] ids of every label's prompts (label-major); an
    InputError for no labels, a bad template or a too-long prompt."""
    self._pair(modality)
    if not labels or not prompts or isinstance(labels, str) or isinstance(
        prompts, str):
      raise InputError('bad_value', 'zero_shot needs a list of at least one '
                       'label and a list of at least one prompt template.')
    try:
      texts = zeroshot_lib.fill_prompts(prompts, labels)
    except (IndexError, KeyError, ValueError) as e:
      raise InputError('bad_value', f'Bad prompt template in {list(prompts)}: '
                       f'{e!r} (use {{}} or {{name}} for the label, {{index}} '
                       'for its position).') from e
    return self.inputs.batch('text', [t for group in texts for t in group])[0]

  def classify(self, embeddings: np.ndarray, modality: str,
               labels: Sequence[str], prompts: Sequence[str] = ('{}',)
               ) -> ZeroShot:
    """Zero-shot labels of embeddings [N, D] (from embed_arrays)."""
    protos = self.prototypes(modality, labels, prompts)
    scores = np.asarray(embeddings, np.float32) @ protos.T
    pair, _ = self._pair(modality)
    scale = float(np.exp(np.asarray(self.model.log_scale[...])[pair]))
    logits = scale * scores
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    index = np.argmax(scores, axis=1).astype(np.int32)
    return ZeroShot(labels=[labels[i] for i in index], index=index,
                    scores=scores.astype(np.float32),
                    probs=probs.astype(np.float32))

  def zero_shot(self, labels: Sequence[str], prompts: Sequence[str] = ('{}',),
                images=None, audio=None, *, videos=None,
                sample_rate: int | None = None, **unknown) -> ZeroShot:
    """Classifies images, videos or audio (one of them) among `labels`,
    described by `prompts` templates (CLIP prompt ensembling; see
    `prototypes`)."""
    _unknown_arguments(unknown, ('images', 'videos', 'audio'))
    given = {m: v for m, v in (('image', images), ('video', videos),
                               ('audio', audio)) if v is not None}
    if len(given) != 1:
      raise InputError('bad_value', 'zero_shot classifies one modality per '
                       'call: give images=, videos= or audio=, got '
                       f'{sorted(given)}.')
    (modality, values), = given.items()
    arrays = self.preprocess(sample_rate=sample_rate,
                             **{inputs_lib.ARGUMENTS[modality]: values})
    emb = self.embed_arrays(arrays)[modality]
    return self.classify(emb, modality, labels, prompts)

  # ------------------------------------------------------- generation ---

  def decoding(self, **options) -> Decoding:
    """Decoding options with the export's defaults (config.decoding)."""
    d = self.config.get('decoding') or {}
    defaults = {'method': 'beam' if d.get('beam_size', 1) > 1 else 'greedy',
                'alpha': d.get('alpha', 0.6)}
    if d.get('beam_size', 1) > 1:
      defaults['beam_size'] = d['beam_size']
    unknown = set(options) - {f.name for f in dataclasses.fields(Decoding)}
    if unknown:
      raise InputError('bad_option', f'Unknown decoding option(s) '
                       f'{sorted(unknown)}: use '
                       f'{[f.name for f in dataclasses.fields(Decoding)]}.')
    options = {k: v for k, v in options.items() if v is not None}
    return Decoding(**{**defaults, **options}).checked(
        d.get('max_new_tokens', 16), self.model.decoder.vocab_size)

  def media_arrays(self, images=None, audio=None, *, videos=None,
                   sample_rate: int | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw media (None entries: that example lacks the modality) ->
    ({modality: arrays [N, ...]}, {modality: present bool [N]})."""
    given = {m: v for m, v in (('image', images), ('video', videos),
                               ('audio', audio)) if v is not None}
    if not given:
      raise InputError('bad_value', 'Give images=, videos= and/or audio= '
                       '(lists, None for an example that lacks one).')
    media, present = {}, {}
    for modality, values in given.items():
      self._field(modality)
      media[modality], present[modality] = self.inputs.batch(
          modality, values, sample_rate=sample_rate, allow_missing=True)
    sizes = {m: len(x) for m, x in media.items()}
    if len(set(sizes.values())) != 1:
      raise InputError('bad_value', f'Media lists differ in length {sizes}: '
                       'give one entry (or None) per example.')
    return media, present

  def question_prompts(self, questions: Sequence[str]) -> np.ndarray:
    """int32 [N, 1 + L]: bos, then each question's ids (the VQA prompt)."""
    ids, _ = self.inputs.batch('text', questions)
    bos = np.full((len(ids), 1), self.inputs.tokenizer.bos_id, np.int32)
    return np.concatenate([bos, ids], axis=1)

  def caption_prompts(self, n: int) -> np.ndarray:
    """int32 [n, 1]: bos (the captioning prompt)."""
    return np.full((n, 1), self.inputs.tokenizer.bos_id, np.int32)

  def generate_arrays(self, media: Mapping[str, np.ndarray],
                      present: Mapping[str, np.ndarray] | None,
                      prompt: np.ndarray, decoding: Decoding) -> Generation:
    """Generates text for N examples from preprocessed arrays.

    Args:
      media: {modality: arrays [N, ...]} (a non-empty subset of the towers).
      present: {modality: bool [N]}; False masks that example's modality
        (as the model's modality presence does); None: all present.
      prompt: int32 [N, P] right-padded prompts (caption_prompts,
        question_prompts).
      decoding: `decoding(...)` output.
    """
    d = decoding
    ids = self.inputs.tokenizer.ids
    self.check_generation(prompt, d)
    names = tuple(sorted(media))
    fields = {m: self._field(m) for m in names}
    present = {m: np.ones(len(prompt), bool) if present is None or m not in
               present else np.asarray(present[m], bool) for m in names}

    def body(state, media, present, prompt, rng, temperature, alpha):
      model = nnx.merge(self._graphdef, state)
      memory, mask = model.encode({fields[m]: media[m] for m in names},
                                  {fields[m]: present[m] for m in names})
      kw = dict(memory=memory, memory_mask=mask,
                max_new_tokens=d.max_new_tokens, eos_id=ids.eos,
                pad_id=ids.pad)
      if d.method == 'beam':
        out = generate.beam_search(model.decoder, prompt,
                                   beam_size=d.beam_size, alpha=alpha, **kw)
        return out.tokens[:, 0], out.scores[:, 0]
      if d.method == 'sample':
        out = generate.sample(model.decoder, prompt, rng,
                              temperature=temperature, top_k=d.top_k, **kw)
      else:
        out = generate.greedy(model.decoder, prompt, **kw)
      return out.tokens, out.logprob

    key = ('generate', names, d.method, d.max_new_tokens, d.top_k,
           d.beam_size, prompt.shape[1])
    fn = self._jit(key, f'{self.task}/{"+".join(names)}/{d.method}', body)
    base_key = jax.random.key(d.seed)
    tokens, scores = buckets_lib.run(
        lambda media, present, prompt, chunk: fn(
            self._state, media, present, prompt,
            jax.random.fold_in(base_key, chunk),
            jnp.float32(d.temperature), jnp.float32(d.alpha)),
        ({m: media[m] for m in names}, present, prompt.astype(np.int32)),
        self.buckets)
    texts = text_generation.continuations(tokens, prompt,
                                          self.inputs.tokenizer, ids=ids)
    return Generation(texts=texts, tokens=tokens.astype(np.int32),
                      scores=scores.astype(np.float32))

  def check_generation(self, prompt: np.ndarray, decoding: Decoding) -> None:
    """InputError when prompt [N, P] plus the budget exceeds the decoder."""
    if prompt.ndim != 2 or not len(prompt):
      raise InputError('bad_value', f'prompt must be int [N, P] with N >= 1, '
                       f'got shape {prompt.shape}.')
    max_len = self.model.decoder.max_len
    if prompt.shape[1] + decoding.max_new_tokens > max_len:
      raise InputError(
          'bad_option', f'A prompt of {prompt.shape[1]} tokens plus '
          f'max_new_tokens={decoding.max_new_tokens} exceeds the decoder\'s '
          f'{max_len} positions: ask for at most '
          f'{max_len - prompt.shape[1]} new tokens.')

  def caption(self, images=None, audio=None, *, videos=None,
              sample_rate: int | None = None, method: str | None = None,
              max_new_tokens: int | None = None, **options) -> list[str]:
    """Captions (or transcripts) of raw media: one text per example.

    images / videos / audio: lists of raw values, one entry per example
    (None: the example lacks that modality). Decoding: method 'greedy' |
    'sample' | 'beam', max_new_tokens, temperature, top_k, beam_size,
    alpha, seed (see Decoding; defaults from the export's config.decoding).
    """
    self.require('caption')
    decoding = self.decoding(method=method, max_new_tokens=max_new_tokens,
                             **options)
    media, present = self.media_arrays(images, audio, videos=videos,
                                       sample_rate=sample_rate)
    n = len(next(iter(media.values())))
    return self.generate_arrays(media, present, self.caption_prompts(n),
                                decoding).texts

  def answer(self, questions: Sequence[str], images=None, audio=None, *,
             videos=None, sample_rate: int | None = None,
             method: str | None = None,
             max_new_tokens: int | None = None, **options) -> list[str]:
    """Answers one question per example about its media (as `caption`;
    a None media entry masks that modality for the example)."""
    self.require('answer')
    decoding = self.decoding(method=method, max_new_tokens=max_new_tokens,
                             **options)
    media, present = self.media_arrays(images, audio, videos=videos,
                                       sample_rate=sample_rate)
    prompt = self.question_prompts(questions)
    n = len(next(iter(media.values())))
    if len(prompt) != n:
      raise InputError('bad_value', f'{len(prompt)} questions for {n} '
                       'examples of media: give one question per example.')
    return self.generate_arrays(media, present, prompt, decoding).texts

  # ----------------------------------------------------------- speech ---

  @property
  def log_mel(self) -> audio_lib.LogMelConfig:
    """The front end of the tts model's targets (what Griffin-Lim inverts):
    the mel settings of the field kind of config.tts.audio."""
    self.require('speak')
    field = (self.config.get('tts') or {}).get('audio', 'audio')
    return self.inputs.kind(inputs_lib.kind_of(field, self.config.input)).mel

  @property
  def sample_rate(self) -> int:
    """Hz of speak()'s waveforms."""
    return self.log_mel.sample_rate

  def synthesize_arrays(self, ids: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int32 [N, L] (preprocessed texts) -> (log-mel float32
    [N, T, F] in the front end's scaling, silence after each end; lengths
    int32 [N] in frames), from the model's `synthesize`."""
    self.require('speak')
    ids = np.asarray(ids, np.int32)
    if ids.ndim != 2 or not len(ids):
      raise InputError('bad_value', f'ids must be int [N, L] with N >= 1, '
                       f'got shape {ids.shape}.')
    fn = self._jit(('speak',), 'speak', lambda state, ids: nnx.merge(
        self._graphdef, state).synthesize(ids))
    mel, lengths = buckets_lib.run(lambda ids, chunk: fn(self._state, ids),
                                   (ids,), self.buckets)
    return mel.astype(np.float32), lengths.astype(np.int32)

  def waveforms(self, mel: np.ndarray, lengths: np.ndarray, *,
                iterations: int = 64) -> list[np.ndarray]:
    """Log-mel [N, T, F] and lengths [N] (synthesize_arrays) -> N float32
    waveforms at `sample_rate`, by Griffin-Lim (multimodal/data/
    griffin_lim.py, `iterations` steps), each cut after its last frame:
    (length - 1) * hop + window samples."""
    if not 1 <= int(iterations) <= 1000:
      raise InputError('bad_option', f'iterations must be in 1..1000, got '
                       f'{iterations}.')
    cfg = self.log_mel
    out = []
    for features, n in zip(mel, lengths):
      wave = griffin_lim.features_to_wave(features, cfg,
                                          iterations=int(iterations))
      out.append(wave[:(max(int(n), 1) - 1) * cfg.hop + cfg.window])
    return out

  def speak(self, text, *, iterations: int = 64):
    """Speech of `text`: float32 [samples] at `sample_rate` (16 kHz for the
    built-in front end), in [-1, 1]; a list of texts gives a list of them.
    The text is read as the model was trained (a caption, e.g. 'the word
    seven' or 'seven, spoken slowly in a low voice by female1');
    `iterations`: Griffin-Lim steps (more: cleaner phase, slower)."""
    self.require('speak')
    single = isinstance(text, (str, bytes))
    ids, _ = self.inputs.batch('text', [text] if single else text)
    mel, lengths = self.synthesize_arrays(ids)
    waves = self.waveforms(mel, lengths, iterations=iterations)
    return waves[0] if single else waves

  # -------------------------------------------------------- explaining ---

  def explain(self, images=None, audio=None, *,
              questions: Sequence[str] | None = None,
              labels: Sequence[str] | None = None,
              prompts=('{}',), targets: Sequence[str] | None = None,
              sample_rate: int | None = None, saliency: bool = True):
    """Which modality drove each prediction (multimodal/explain.py).

    Exact Shapley values over the media given (each modality masked as the
    model masks a missing one; 2^M scored coalitions) and gradient x input
    saliency over image pixels and spectrogram frames, of one score:

    * captioning / VQA export: the log-probability (nats) of the target
      text under teacher forcing (its tokens and end token given the prompt
      and the media): the greedy caption / answer to `questions` by
      default, or `targets` (one text per example).
    * contrastive export: zero-shot among `labels` (`prompts`: templates,
      or {modality: templates}) of images and/or audio, the media's logits
      summed (late fusion); the log softmax probability of the predicted
      label, or of `targets` (label names).

    images, audio: lists of raw values, one per example (None: the example
    lacks that modality, whose Shapley value is then 0). Returns a
    multimodal.explain.Explanation (shapley, shares, saliency, scores);
    multimodal.explain_plot.plot draws one example.
    """
    if self.generative:
      if labels is not None:
        raise InputError('bad_value', 'labels= are for contrastive exports; '
                         f'this is a {self.task} model.')
      return explain_lib.explain_generative(
          self, images, audio, questions=questions, targets=targets,
          sample_rate=sample_rate, saliency=saliency)
    if questions is not None or labels is None:
      raise InputError('bad_value', 'A contrastive export explains a zero-'
                       'shot label: give labels=[...] (and prompts=), not '
                       'questions=.')
    return explain_lib.explain_contrastive(
        self, labels, prompts, images, audio, targets=targets,
        sample_rate=sample_rate, saliency=saliency)
