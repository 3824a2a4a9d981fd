"""digits_trimodal: handwritten digits, spoken digits and text (tfds builder).

  from data_pipelines import digits_trimodal
  builder = digits_trimodal.build(data_dir)      # builds once, array_record
  source = builder.as_data_source('train')       # random-access records
  tokenizer = sentencepiece.SentencePieceProcessor(
      model_file=digits_trimodal.TOKENIZER_PATH)
"""
import os

from data_pipelines.digits_trimodal.digits_trimodal import DigitsTrimodal

TOKENIZER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              'tokenizer.model')


def build(data_dir: str) -> DigitsTrimodal:
  """Builds the dataset under `data_dir` unless already there; the builder."""
  builder = DigitsTrimodal(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()  # no-op when already prepared
  return builder
