# The two commands a new user needs:  make demo  and  make test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
WORKDIR ?= workdirs/demo
DEMO_CONFIG ?= projects/digits/configs/contrastive.py
EXPORT_DIR ?= exports/contrastive_digits
FINETUNE_WORKDIR ?= workdirs/vqa_finetune

.PHONY: demo test test-all setup data video-data clean finetune bench-peers \
  filter-experiment

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,digits]'
	touch $@

setup: $(VENV)/.installed

$(DATA_DIR)/digits_trimodal/1.0.0/dataset_info.json: | setup
	$(PY) -m projects.digits.data.build --data_dir=$(DATA_DIR)

data: $(DATA_DIR)/digits_trimodal/1.0.0/dataset_info.json

# The moving digits (projects/digits/data/digits_video.py), about 15 s.
$(DATA_DIR)/digits_video/1.0.0/dataset_info.json: | setup
	$(PY) -m projects.digits.data.build --data_dir=$(DATA_DIR) \
	  --dataset=digits_video

video-data: $(DATA_DIR)/digits_video/1.0.0/dataset_info.json

demo: setup data
	$(PY) -m multimodal.train --config=$(DEMO_CONFIG) --workdir=$(WORKDIR) \
	  --config.dataset.data_dir=$(DATA_DIR)

# The demo's model as an export (needs `make demo` first).
$(EXPORT_DIR)/model.json: | setup
	$(PY) -m multimodal.export --workdir=$(WORKDIR) --out=$(EXPORT_DIR)

# VQA with image and audio towers initialised from the demo's export.
finetune: setup data $(EXPORT_DIR)/model.json
	$(PY) -m multimodal.train --config=projects/digits/configs/vqa.py:finetune \
	  --workdir=$(FINETUNE_WORKDIR) --config.dataset.data_dir=$(DATA_DIR) \
	  --config.init_from.path=$(EXPORT_DIR)

# CLIP-score filtering: noisy vs filtered vs clean training data
# (projects/digits/filtering/run.py; three trainings of about 10 minutes).
# FILTER_ARGS=--clean_workdir=$(WORKDIR) reuses the `make demo` run as the
# clean one.
FILTER_DIR ?= workdirs/filtering
FILTER_ARGS ?=
filter-experiment: setup data
	$(PY) -m projects.digits.filtering.run --data_dir=$(DATA_DIR) \
	  --out=$(FILTER_DIR) $(FILTER_ARGS)

# CI's selection: everything but the `slow` marker (the full format x task
# cross product of tests/test_own_data.py; one case per format runs here).
test: setup
	$(PY) -m pytest -q -n 2 -m 'not slow' tests

test-all: setup
	$(PY) -m pytest -q -n 2 tests

# The training step side by side with open_clip and big_vision
# (benchmarks/peers.py; see benchmarks/README.md). open_clip runs in its own
# venv with the `bench` extra's packages alone (setup.cfg); big_vision from
# a source checkout: make bench-peers BIG_VISION_DIR=../big_vision.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BIG_VISION_DIR ?=
PEERS_ARGS ?= --model siglip_b32 --batch 32 --rounds 2

$(BENCH_VENV)/.installed: setup.cfg
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(PYTHON) -c 'import configparser; c = configparser.ConfigParser(); \
	  c.read("setup.cfg"); \
	  print(c["options.extras_require"]["bench"].strip())' \
	  | xargs $(BENCH_PY) -m pip install --quiet
	touch $@

bench-peers: setup $(BENCH_VENV)/.installed
	BIG_VISION_DIR=$(BIG_VISION_DIR) $(PY) benchmarks/peers.py \
	  --torch_python $(BENCH_PY) $(PEERS_ARGS)

clean:
	rm -rf $(WORKDIR) $(EXPORT_DIR) $(FINETUNE_WORKDIR)
