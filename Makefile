# dicom-ai-node: the two commands of the README are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test lint bench clean-var conformance

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU wheel 2.13.0 (any other version pulls gigabytes of CUDA)
$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	# the "brain" extra: deepbet, whose wheel holds the mr-brain-extraction networks
	$(PY) -m pip install --quiet -e '.[brain]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

serve: $(STAMP)
	$(VENV)/bin/dicom-ai-node serve

test: $(TEST_STAMP)
	bash scripts/install-tools.sh $(VENV)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check dicom_ai_node tests bench models scripts
	$(VENV)/bin/ruff format --check dicom_ai_node tests bench models scripts
	$(VENV)/bin/mypy

bench: $(TEST_STAMP)
	bash scripts/install-tools.sh $(VENV)
	$(PY) bench/ingest.py
	$(PY) bench/infer.py

clean-var:
	rm -rf var

# the DICOM Conformance Statement, generated from the code's own tables
conformance: $(STAMP)
	$(PY) -m scripts.conformance > docs/conformance.md.tmp
	mv docs/conformance.md.tmp docs/conformance.md
