r"""The built-in demo: handwritten digits, spoken digits and text.

digits_trimodal pairs sklearn's 8x8 handwritten digit scans with espeak-ng
clips of the same digit (voices of the test split are never heard in
training), captions of both and questions over a scan and a second clip.
It is small enough to train contrastive, captioning and VQA models on a
CPU in minutes.

Layout:
  data/      the tfds builder (still named digits_trimodal, so the data lies
             in DATA_DIR/digits_trimodal/1.0.0), its committed speech clips
             and sentencepiece tokenizer, and the `digits_trimodal` data
             source registered on import.
  configs/   contrastive.py, captioning.py, vqa.py: experiments; defaults.py
             and seq2seq.py: settings they share (not experiments). Each
             lists 'projects.digits.data' in config.imports.

Commands (from the repository root):
  python -m projects.digits.data.build --data_dir=data
  python -m multimodal.train --config projects/digits/configs/contrastive.py \
      --workdir workdirs/demo --config.dataset.data_dir=data
  python -m multimodal.export --workdir workdirs/demo \
      --out exports/contrastive_digits
  python -m multimodal.train --config projects/digits/configs/vqa.py:finetune \
      --workdir workdirs/vqa_finetune --config.dataset.data_dir=data \
      --config.init_from.path=exports/contrastive_digits

`make demo` and `make finetune` run these.
"""
