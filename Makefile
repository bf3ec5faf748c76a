# msagg: make demo | make test | make prepare/pretrain/extract/classify | make bench | make clean
# Variables choose what runs, e.g.  make pretrain PRESET=paper DATASET=mtat SOURCE=~/data/mtat RUN=runs/mtat

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
MSAGG    := $(BIN)/msagg

PRESET   ?= demo
DATASET  ?= synth-tags
SOURCE   ?=
TARGETS  ?= $(DATASET)
RUN      ?= runs/$(PRESET)
PREPARE_ARGS ?=
PRETRAIN_ARGS ?=
EXTRACT_ARGS ?=
CLASSIFY_ARGS ?=
# The prepare preset only sizes the synthetic datasets; real data ignores it.
PREP_PRESET := $(if $(filter synth-%,$(DATASET)),--preset $(if $(filter paper,$(PRESET)),demo,$(PRESET)),)

.PHONY: help venv teacher demo demo-synth-tags demo-synth-genre prepare pretrain extract classify test faults bench bench-pipeline pretrain-general pretrain-general-gm eval-esc10 clean

help:
	@echo "make teacher    venv + the musicnn wheel, whose checkpoints the teacher (MTT/MSD taggers) reads"
	@echo "make demo       venv + every stage on the embedded synthetic dataset, then the results tables"
	@echo "make test       the test suite"
	@echo "make faults     only the fault-injection tests (kills, full disk, locks, bad files; tiny data)"
	@echo "make prepare | pretrain | extract | classify   one stage (PRESET=$(PRESET) DATASET=$(DATASET) RUN=$(RUN))"
	@echo "make bench      SampleCNN throughput and memory (writes runs/bench/bench.json)"
	@echo "make bench-pipeline  prepare, training input and extract at 16 and 64 tracks (runs/bench/pipeline.json)"
	@echo "make pretrain-general  the general family: 20 h of Debian soundtracks, musicnn's tags (about 1 h)"
	@echo "make pretrain-general-gm  SampleCNNs on a 2000-track rendered GM corpus (about 1 h on 2 cores)"
	@echo "make eval-esc10 5-fold ESC-10 protocol, demo preset, augmentation off and on (needs ../shared/datasets/esc10)"
	@echo "make clean      remove runs/ and caches (keeps .venv)"

venv: $(VENV)/.installed

# tinysoundfont (synth-gm's renderer) with --no-deps: it declares pyaudio, which only its real-time
# playback uses and which does not build without the portaudio headers.
$(VENV)/.installed: setup.py setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps 'tinysoundfont>=0.3.7'
	touch $@

# The teacher's weights: musicnn's checkpoints, read from its wheel (msagg never imports musicnn). With
# --no-deps: the wheel pins numpy<1.17, which no install beside TensorFlow 2 and Python 3.11 can satisfy.
teacher: $(VENV)/.installed-teacher

$(VENV)/.installed-teacher: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-deps 'musicnn==0.1.0'
	touch $@

# The tests also need the optional engines (Ray, JAX): the test extra, installed only for them; and the
# teacher, so that the port is checked against the original's recorded outputs.
$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-teacher
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# prepare one dataset: make prepare DATASET=folder SOURCE="path/to/folders"
prepare: venv
	$(MSAGG) prepare --dataset $(DATASET) $(if $(SOURCE),--source "$(SOURCE)") $(PREP_PRESET) \
		--out $(RUN)/prepare/$(DATASET) $(PREPARE_ARGS)

pretrain: prepare
	$(MSAGG) pretrain --cache $(RUN)/prepare/$(DATASET) --preset $(PRESET) --out $(RUN)/pretrain $(PRETRAIN_ARGS)

# extract features of every dataset in TARGETS (each must be prepared in $(RUN)/prepare/)
extract: pretrain
	for t in $(TARGETS); do \
		test -f $(RUN)/prepare/$$t/DONE || $(MAKE) --no-print-directory prepare DATASET=$$t SOURCE= RUN=$(RUN) PRESET=$(PRESET) || exit 1; \
		$(MSAGG) extract --pretrain $(RUN)/pretrain --cache $(RUN)/prepare/$$t --out $(RUN)/extract/$$t $(EXTRACT_ARGS) || exit 1; \
	done

classify: extract
	for t in $(TARGETS); do \
		$(MSAGG) classify --features $(RUN)/extract/$$t --out $(RUN)/classify/$$t $(CLASSIFY_ARGS) || exit 1; \
	done

# The demo: pretrain on synth-tags, then extract and classify synth-tags and synth-genre side by side
# (two jobs: neither keeps both cores busy alone); each job's output shows when it ends.
DEMO_RUN := runs/demo
demo:
	$(MAKE) --no-print-directory pretrain PRESET=demo DATASET=synth-tags RUN=$(DEMO_RUN)
	@echo "extract and classify synth-tags and synth-genre side by side; each one's output shows when it ends"
	$(MAKE) --no-print-directory -j2 --output-sync=target demo-synth-tags demo-synth-genre
	@echo; echo "Plots: $(DEMO_RUN)/classify/*/plots/   Tables: $(DEMO_RUN)/classify/*/results.md"

demo-synth-tags demo-synth-genre: demo-%: venv
	test -f $(DEMO_RUN)/prepare/$*/DONE || $(MSAGG) prepare --dataset $* --preset demo --out $(DEMO_RUN)/prepare/$*
	$(MSAGG) extract --pretrain $(DEMO_RUN)/pretrain --cache $(DEMO_RUN)/prepare/$* --out $(DEMO_RUN)/extract/$*
	$(MSAGG) classify --features $(DEMO_RUN)/extract/$* --out $(DEMO_RUN)/classify/$*

# Two pytest workers, each test file on one of them (its module fixtures built once): many tests wait on
# subprocesses, Ray actors or kills, so two files at a time fill the two cores better than one.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

faults: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests/test_faults_lock.py tests/test_faults_disk.py tests/test_faults_files.py tests/test_faults_shards.py \
		tests/test_faults_resume.py tests/test_faults_signals.py tests/test_overwrite.py tests/test_integrity_tables.py tests/test_bad_input.py

bench: venv
	$(MSAGG) bench --out runs/bench/bench.json

bench-pipeline: venv
	$(MSAGG) bench-pipeline --out runs/bench/pipeline.json

# The `general` family (about 1 h on 2 CPU cores; msagg ships the one this made): the music of nine Debian
# game soundtrack packages (2.2 GB downloaded with apt-get download, 20 h of music; their licences in
# runs/general/music/CORPUS.md), labelled by musicnn's MTT and MSD taggers, then the general preset.
# On a GPU, or with your own music:  msagg prepare --dataset unlabelled --source ~/Music ..., then teach and
# pretrain as below (docs/transfer.md).
GENERAL := runs/general
pretrain-general: teacher $(GENERAL)/music/CORPUS.md
	$(MSAGG) prepare --dataset unlabelled --source $(GENERAL)/music --out $(GENERAL)/prepare $(PREPARE_ARGS)
	$(MSAGG) teach --cache $(GENERAL)/prepare --set features=true --out $(GENERAL)/teach
	$(MSAGG) pretrain --cache $(GENERAL)/prepare --teacher-labels $(GENERAL)/teach --preset general \
		--out $(GENERAL)/pretrain $(PRETRAIN_ARGS)

$(GENERAL)/music/CORPUS.md: | venv
	$(BIN)/python -m msagg.data.corpus --out $(GENERAL)/music

# SampleCNNs on a rendered General MIDI corpus with its own tags (about an hour on 2 CPU cores).
# Another SoundFont: make pretrain-general-gm PREPARE_ARGS="--soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2"
pretrain-general-gm: venv
	$(MSAGG) prepare --dataset synth-gm-tags --preset general-gm --out runs/general-gm/prepare/synth-gm-tags \
		$(PREPARE_ARGS)
	$(MSAGG) pretrain --cache runs/general-gm/prepare/synth-gm-tags --preset general-gm --out runs/general-gm/pretrain \
		$(PRETRAIN_ARGS)

# Augmentation off (the preset) and on side by side: two pretrainings per fold, about 50 min on 2 cores.
eval-esc10: venv
	$(MSAGG) crossval --dataset esc10 --source ../shared/datasets/esc10 --preset demo \
		--compare 'augment: augment=true' --out runs/esc10

clean:
	rm -rf runs .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
