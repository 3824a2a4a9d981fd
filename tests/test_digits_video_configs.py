"""The digits_video experiment configs: short training runs, then the same
model evaluated with its frames shuffled in time (one config flag)."""
import importlib

import pytest

import conftest

from multimodal import evaluate
from projects.digits import data as digits_data

pytestmark = pytest.mark.usefixtures('fast_compiles')

# Metric names each config's evaluators report, content and order parts.
EXPECTED = {
    'video_vqa': [f'exact_match/{c}/{t}'
                  for c in ('full', 'masked_video', 'masked_audio')
                  for t in ('digit', 'kind', 'match', 'direction', 'all')],
    'video_contrastive': [f'zeroshot/video/{p}' for p in
                          ('digit', 'kind', 'motion', 'direction')]
                         + ['zeroshot/video~audio'],
    'video_captioning': [f'caption_parts/video/{p}' for p in
                         ('digit', 'kind', 'motion', 'direction')]
                        + ['caption/video/cider'],
}


@pytest.fixture(scope='module')
def video_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits_data.build(data_dir, 'digits_video')  # ~10 s
  return data_dir


@pytest.mark.parametrize('experiment', [
    'video_vqa',
    pytest.param('video_contrastive', marks=pytest.mark.slow),
    pytest.param('video_captioning', marks=pytest.mark.slow),
])
def test_train_then_evaluate_with_shuffled_frames(experiment, video_data_dir,
                                                  tmp_path):
  config = importlib.import_module(
      f'projects.digits.configs.{experiment}').get_config('tiny')
  config.dataset.data_dir = video_data_dir
  final, _ = conftest.short_training_run(config, tmp_path)  # 20 steps
  for name in EXPECTED[experiment]:
    assert 0.0 <= final[f'validation/{name}'] <= 1.0, name
  # The README's command: multimodal.evaluate with
  # --config.input.frame_order=shuffled on the recorded config.
  shuffled = config.copy_and_resolve_references()
  shuffled.input.frame_order = 'shuffled'
  shuffled.eval_split = 'validation[:40]'
  metrics = evaluate.evaluate_pretrained(str(tmp_path), shuffled)
  prefix = shuffled.eval_split  # metric names start with the split
  assert metrics[f'{prefix}/num_examples'] == (
      40 * 4 if experiment == 'video_vqa' else 40)
  for name in EXPECTED[experiment]:
    assert 0.0 <= metrics[f'{prefix}/{name}'] <= 1.0, name
