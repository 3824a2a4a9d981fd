"""Captioning: reference fields, evaluation bookkeeping, a real training run."""
import numpy as np
import pytest

import conftest

from multimodal import mesh as mesh_lib
from multimodal import registry
from multimodal import train
from multimodal.data import pipeline
from multimodal.tasks import text_generation


pytestmark = pytest.mark.usefixtures('fast_compiles')


def _eval_batches(config, task, batch_size):
  """Global eval batches as the trainer makes them (last one padded)."""
  mesh = mesh_lib.build_mesh(config.mesh)
  it, pre, n = pipeline.make_iterator(config, config.eval_split, train=False,
                                      fields=task.fields,
                                      batch_size=batch_size)
  sharding = mesh_lib.batch_sharding(mesh)
  return ((train.shard_batch(train.pad_batch(b, batch_size), sharding)
           for b in it), pre.tokenizer, mesh, n)


def test_reference_fields_hold_every_caption(captioning_tiny_config):
  config = captioning_tiny_config
  task = registry.get('task', 'captioning')(config)
  assert {'image_text_refs', 'audio_text_refs'} <= set(task.fields)
  it, pre, _ = pipeline.make_iterator(config, 'test', train=False,
                                      fields=task.fields, batch_size=4)
  batch = next(it)
  source = pipeline.open_source(config.dataset, 'test')
  assert batch['image_text_refs'].shape == (4, 5, config.input.max_text_len)
  for i in range(4):
    record = source[i]
    refs = text_generation.references(batch['audio_text_refs'][i:i + 1],
                                      pre.tokenizer, ids=pre.tokenizer.ids)[0]
    assert refs[0] == record['speech_captions'][0].decode()
    assert len(refs) == len(record['speech_captions'])
    words = pre.tokenizer.decode(batch['image_text'][i])
    assert words in text_generation.references(
        batch['image_text_refs'][i:i + 1], pre.tokenizer,
        ids=pre.tokenizer.ids)[0]


def test_evaluation_scores_each_example_once(captioning_tiny_config,
                                              monkeypatch):
  """An oracle that 'generates' each record's second reference: exact match
  is 1 for both media, padding rows are not scored."""
  config = captioning_tiny_config
  task = registry.get('task', 'captioning')(config)

  def oracle(model, batch):
    del model
    out = {}
    for media, text in task.targets:
      refs = batch[text + '_refs']
      out[f'tokens/{media}'] = text_generation.join(
          text_generation.bos_prompt(batch=refs.shape[0], ids=task.ids),
          refs[:, 1], ids=task.ids)
      out[text + '_refs'] = refs
    return out

  monkeypatch.setattr(task, 'outputs_fn', oracle)
  batches, tokenizer, mesh, n = _eval_batches(config, task, 64)
  assert n % 64  # the last batch is padded
  metrics = task.evaluate(None, batches, tokenizer, mesh, prefix='test')
  assert metrics['test/num_examples'] == n
  for media in ('image', 'audio'):
    assert metrics[f'test/caption/{media}/exact_match'] == 1.0
    assert metrics[f'test/caption/{media}/bleu4'] > 0.99
    assert metrics[f'test/caption/{media}/cider'] > 1.0
  # The second phrasing is longer than the canonical 'the word six'.
  assert metrics['test/caption/audio/wer'] > 1.0
  assert 'test/caption/image/wer' not in metrics


def test_bad_targets_are_clear_errors(captioning_tiny_config):
  config = captioning_tiny_config
  config.captioning.targets = (('video', 'image_text'),)
  with pytest.raises(ValueError, match='towers'):
    registry.get('task', 'captioning')(config)


def test_tiny_training_lowers_the_loss_and_reports_metrics(
    captioning_tiny_config, tmp_path):
  final, _ = conftest.short_training_run(captioning_tiny_config, tmp_path)
  assert final['validation/num_examples'] == 179
  for media in ('image', 'audio'):
    name = f'validation/caption/{media}'
    assert 0.0 <= final[name + '/cider'] <= 10.0
    assert 0.0 <= final[name + '/bleu4'] <= 1.0
    assert 0.0 <= final[name + '/exact_match'] <= 1.0
  assert 0.0 <= final['validation/caption/audio/wer'] < np.inf
