# The two commands a new user needs:  make demo  and  make test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
WORKDIR ?= workdirs/demo
DEMO_CONFIG ?= experiments/contrastive_digits.py

.PHONY: demo test setup data clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

$(DATA_DIR)/digits_trimodal/1.0.0/dataset_info.json: | setup
	$(PY) -m data_pipelines.digits_trimodal.build --data_dir=$(DATA_DIR)

data: $(DATA_DIR)/digits_trimodal/1.0.0/dataset_info.json

demo: setup data
	$(PY) -m multimodal.train --config=$(DEMO_CONFIG) --workdir=$(WORKDIR) \
	  --config.dataset.data_dir=$(DATA_DIR)

test: setup
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(WORKDIR)
