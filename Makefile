# Everything runs from a project virtualenv (.venv) built from the pinned requirements and the
# pinned Node tools (node_modules, from package-lock.json). `make test` and `make demo` set both
# up on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := 1
## Python writes its bytecode cache (__pycache__, ignored by git, left out of every bundle and
## image) even where the environment says not to (PYTHONDONTWRITEBYTECODE=1, as on the CI
## machine): without it every process compiles the project's modules again (importing the offline
## engine: 3.5 s of processor time uncached, 2.5 s cached), and pytest rewrites every test module
## again in each worker. An empty value is "not set" to Python.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install test lint unit synth demo describe preflight bench snapshot-update image-uris prices lock-hashes checkov clean

install: $(VENV)/.installed node_modules/.installed

## uv (pinned below, installed into the venv by its own pip) installs the pinned files: the same
## packages pip would install (same `pip freeze`), bytecode compiled as pip compiles it, in about a
## minute where pip took three and a half (a fresh clone, 2 cores; docs/install.md). uv does not
## read pip's configuration: PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS and PIP_NO_INDEX,
## where set in the environment, are passed on (pip.conf files are not).
UV_VERSION := 0.13.9
UV_PIP_INSTALL = $(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode
UV_INSTALL = $(UV_PIP_INSTALL) $(if $(PIP_INDEX_URL),--index-url $(PIP_INDEX_URL)) \
	$(foreach url,$(PIP_EXTRA_INDEX_URL),--extra-index-url $(url)) \
	$(foreach links,$(PIP_FIND_LINKS),--find-links $(links)) \
	$(if $(filter 1 true yes on,$(PIP_NO_INDEX)),--no-index)

## torch comes from PyPI as pinned in requirements-lock.txt: a CUDA build on Linux x86_64 (~2.7 GB of
## wheels). For the CPU build instead, on a fresh .venv (rm -rf .venv first):
##   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
## installs the lock's torch version as +cpu from TORCH_INDEX (without its dependencies) before the
## rest; the install from PyPI then keeps it, since `torch==2.13.0` also matches `2.13.0+cpu`.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(if $(TORCH_INDEX),$(UV_PIP_INSTALL) --no-deps --index-url $(TORCH_INDEX) \
	  "torch==$$(sed -n 's/^torch==\([^;+ ]*\).*/\1/p' requirements-lock.txt)+cpu")
	$(UV_INSTALL) -r requirements-dev.txt -c requirements-lock.txt
	$(UV_INSTALL) --no-deps --no-build-isolation -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

TRAINING_PROGRAMS := training_code/digits_mlp/train.py training_code/digits_mlp/digits_model.py \
	training_code/digits_mlp/inference.py \
	training_code/digits_lightgbm/byoc_training training_code/common training_code/digits_sklearn/train.py

## Lint the project's own code and the shipped programs; a program a team adds to training_code/
## is theirs to lint (it need not follow this project's style for `make test` to pass). mypy
## checks the programs of each kind (TRAINING_PROGRAMS) and the scikit-learn sample; ruff alone reads
## the other samples (TensorFlow and transformers are not in this environment, and XGBoost's callback
## class, which its sample subclasses, is untyped).
LINTED := app.py infra smtrain tests benchmarks tools training_code/__init__.py training_code/sample_data.py \
	training_code/common training_code/digits_mlp training_code/digits_lightgbm \
	training_code/digits_sklearn training_code/digits_tensorflow training_code/digits_xgboost_script \
	training_code/digits_huggingface

lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy
	MYPYPATH=training_code:training_code/digits_mlp:training_code/digits_lightgbm \
	  $(VENV)/bin/mypy --explicit-package-bases $(TRAINING_PROGRAMS)

unit: install
	$(VENV)/bin/pytest -q

## The test command: linters, type checks and the whole offline suite.
test: lint unit

synth: install
	$(CDK) synth --no-notices --quiet

## The offline main job (see README): synthesize, then run the workflow locally (script mode,
## then a 4-job tuning run). Other programs: make demo DEMO_ARGS="--program digits_lightgbm".
demo: synth
	$(PY) -m smtrain.local.demo $(DEMO_ARGS)

## Describe the synthesized state machine and its input.
describe: synth
	$(PY) -m infra.describe cdk.out

## With your AWS credentials: ask Step Functions and IAM whether the synthesized app would deploy
## and run (exit 0: nothing would fail; 1: something would; 4: AWS unreachable or not checkable).
preflight: synth
	$(PY) -m smtrain.cli preflight --cdk-out cdk.out

bench: install
	$(PY) benchmarks/synth_bench.py --runs 3

snapshot-update: install
	$(VENV)/bin/pytest -q tests/test_snapshots.py --snapshot-update

## With AWS credentials (pricing:GetProducts): refresh smtrain/core/prices.json, the on-demand
## price of each training instance type, for the region in cdk.json (more: PRICE_REGIONS="a b").
PRICE_REGIONS ?= $(shell $(PYTHON) -c "import json; print(json.load(open('cdk.json'))['context']['defaultRegion'])")
prices: install
	$(PY) -m smtrain.cli.price_table $(foreach region,$(PRICE_REGIONS),--region $(region))

## Refresh infra/image_uris.json for the versions in cdk.json (after changing them) and every
## built-in algorithm (a few seconds).
image-uris: install
	$(PY) -c "import json; c = json.load(open('cdk.json'))['context']['training']; \
	import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'infra.images', \
	'--pytorch-version', c['pytorchVersion'], '--pytorch-py-version', c['pytorchPyVersion'], \
	'--xgboost-version', c['xgboostVersion'], \
	'--framework', 'pytorch:' + c['pytorchVersion'] + ':' + c['pytorchPyVersion'], \
	'--framework', 'tensorflow:' + c['tensorflowVersion'] + ':' + c['tensorflowPyVersion'], \
	'--framework', 'sklearn:' + c['sklearnVersion'], '--framework', 'xgboost:' + c['xgboostVersion'], \
	'--framework', 'huggingface:' + c['huggingfaceVersion'] + ':' + c['huggingfacePyVersion'] + ':' + c['huggingfaceBaseVersion']]))"

## After changing a pin: the sha256 of every file PyPI serves for each pinned version, written into
## requirements-lock.txt (tools/lock_hashes.py; order-only on the install, which a changed pin would
## refuse until its hashes are written). WHEELS: more wheels from elsewhere a pin also accepts; a
## hash already on a line that PyPI does not list (the CPU torch wheel) is kept while its pin is.
WHEELS ?=
lock-hashes: | $(VENV)/.installed
	$(PY) tools/lock_hashes.py $(foreach wheel,$(WHEELS),--wheel $(wheel))

## checkov on the synthesized templates, from a venv of its own under .tools/ (its pinned
## dependencies conflict with the project's): every finding is acknowledged in the templates with a
## reason (Metadata.checkov.skip, infra/compliance.py), so it reports 0 failed checks.
CHECKOV_VERSION := 3.3.30
CHECKOV := .tools/checkov-$(CHECKOV_VERSION)/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .tools/checkov-$(CHECKOV_VERSION)
	.tools/checkov-$(CHECKOV_VERSION)/bin/pip install --quiet --disable-pip-version-check \
	  "checkov==$(CHECKOV_VERSION)"

checkov: synth $(CHECKOV)
	$(CHECKOV) --directory cdk.out --framework cloudformation --quiet --compact --skip-download

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
