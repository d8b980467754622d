# vlmdata: `make demo` runs the whole chain on the embedded default data; `make test` runs every test.
# Both install what they need on a fresh Debian machine (run as root): Debian -dev packages, a Python venv.

SWIFT      ?= swift
VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
RELEASE    := .build/release/vlmdata
# The C ABI library python/vlmdata loads (VLMDATA_LIB); torch: the CPU wheel in pip's local find-links, pinned exactly.
LIBVLMDATA := .build/release/libVLMDataC.so
TORCH      := torch==2.13.0
DEMO_WS    ?= vlmdata-work/demo
# Debian packages: the C libraries (through pkg-config), nginx for the HTTP loader test, sqlite3 CLI for index checks,
# strace for the URL ingest's fsync-order test.
DEBS       := pkg-config libarchive-dev libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libcurl4-openssl-dev libopenblas-dev \
              libsqlite3-dev nginx-light sqlite3 python3-venv libxxhash-dev xxhash chromium libdeflate-dev strace
PKGCONFIG  := libarchive libturbojpeg libjpeg libpng libcurl openblas sqlite3 libxxhash libdeflate
# Debian packages only `make bench` needs: nginx's echo module (echo_sleep adds the URL benchmark's latency) and wrk.
BENCH_DEBS := libnginx-mod-http-echo wrk
# Debian packages of the one-node Slurm cluster `make test-cluster` starts (daemons run directly, no systemd).
CLUSTER_DEBS := slurmctld slurmd slurm-client munge
CLUSTER_BINS := slurmctld slurmd munged sbatch scontrol squeue scancel

.PHONY: all deps deps-cluster venv build debug test test-swift test-parity test-cluster demo bench crashtest composition-full fuzz clean

all: build

## deps: install the Debian -dev packages when pkg-config cannot find them
deps:
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"; \
	for p in $(PKGCONFIG); do pkg-config --exists $$p 2>/dev/null || missing="$$missing $$p"; done; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v sqlite3 >/dev/null 2>&1 || missing="$$missing sqlite3"; \
	command -v xxhsum >/dev/null 2>&1 || missing="$$missing xxhsum"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v strace >/dev/null 2>&1 || missing="$$missing strace"; \
	python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "deps: missing:$$missing; installing Debian packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	else echo "deps: all present"; fi

## deps-cluster: install Slurm and munge when their programs are missing
deps-cluster:
	@missing=""; \
	for b in $(CLUSTER_BINS); do command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "deps-cluster: missing:$$missing; installing Debian packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CLUSTER_DEBS) >/dev/null; \
	else echo "deps-cluster: all present"; fi

## venv: the Python reference tools (tokenizers, pillow, transformers, webdataset, numpy, tiktoken) and torch's
## CPU build: the exact wheel from pip's local find-links first (--no-index: never a multi-GB CUDA download)
venv: $(VENV)/.installed $(VENV)/.torch
$(VENV)/.installed: scripts/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
	touch $@
$(VENV)/.torch: $(VENV)/.installed
	@$(VENV)/bin/pip install -q --disable-pip-version-check --no-index --no-deps '$(TORCH)' || { \
		echo "venv: the $(TORCH) CPU wheel is not in pip's local find-links (pip config list; e.g. /opt/wheels)."; \
		echo "venv: refusing to download it from an index, which would pull a several-GB CUDA build."; exit 1; }
	$(VENV)/bin/pip install -q --disable-pip-version-check '$(TORCH)'
	touch $@

build: deps
	$(SWIFT) build -c release --product vlmdata
	$(SWIFT) build -c release --product vlmdata-bench
	$(SWIFT) build -c release --product VLMDataC

debug: deps
	$(SWIFT) build

## test: Swift unit tests, then the parity and end-to-end tests against the reference tools
test: deps venv build test-swift test-parity test-cluster

# The image tests run a second time with VLMDATA_NO_AVX2=1: the resampler's baseline (SSE2) path must match
# Pillow too, and on a machine with AVX2 nothing else would exercise it.
test-swift:
	VLMDATA_BIN=$(CURDIR)/$(RELEASE) VLMDATA_PYTHON=$(CURDIR)/$(PYTHON) $(SWIFT) test --parallel --num-workers 2
	VLMDATA_NO_AVX2=1 VLMDATA_BIN=$(CURDIR)/$(RELEASE) VLMDATA_PYTHON=$(CURDIR)/$(PYTHON) $(SWIFT) test --filter VLMImageTests

test-parity:
	VLMDATA_BIN=$(CURDIR)/$(RELEASE) VLMDATA_LIB=$(CURDIR)/$(LIBVLMDATA) $(PYTHON) -m pytest -q Tests/parity --ignore=Tests/parity/test_cluster.py
	VLMDATA_NO_AVX2=1 VLMDATA_BIN=$(CURDIR)/$(RELEASE) $(PYTHON) -m pytest -q Tests/parity/test_image.py

## test-cluster: a one-node Slurm cluster on loopback (generated config, own munge key and socket, stopped at the
## end) builds coco-mini with Pipelines/slurm/ as a 4-task job array plus the dependent merge, checked against a
## single-process build (Tests/parity/test_cluster.py)
test-cluster: deps-cluster venv build
	VLMDATA_BIN=$(CURDIR)/$(RELEASE) $(PYTHON) -m pytest -q Tests/parity/test_cluster.py

## demo: the whole chain on the embedded default data (synthetic shapes), ending with RefVLM's accuracies:
## synth → ingest → gen-instructions → tokenizer train → tokenize → patchify → shard → loader → train-smoke
demo: deps build
	rm -rf $(DEMO_WS)
	$(RELEASE) run Pipelines/demo.yaml --workspace $(DEMO_WS)
	$(RELEASE) stats --workspace $(DEMO_WS)
	$(RELEASE) train-smoke --workspace $(DEMO_WS)/train-smoke
	$(RELEASE) view --workspace $(DEMO_WS) --out $(DEMO_WS)/report --quiet
	@echo "report page: $(DEMO_WS)/report/index.html (open it in a browser; no server needed)"
	@echo "loss curve:  $(DEMO_WS)/train-smoke/loss-curve.svg (numbers: $(DEMO_WS)/train-smoke/loss-curve.csv)"

## bench: ours against the peers, side by side in one run (see BENCHMARKS.md)
bench: deps venv build
	@[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] && command -v wrk >/dev/null 2>&1 || { \
		echo "bench: installing $(BENCH_DEBS) (the URL benchmark's latency server and load generator)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null; }
	$(VENV)/bin/pip install -q --disable-pip-version-check -r Benchmarks/requirements.txt
	VLMDATA_LIB=$(CURDIR)/$(LIBVLMDATA) $(PYTHON) Benchmarks/run.py --bin $(RELEASE)

## composition-full: issue 12's composition matrix with every template x tokenizer pair partitioned in every mode
## (CI partitions a different third of the pairs per mode; this is the whole product, about 3x the time)
composition-full: deps venv build
	VLMDATA_COMPOSITION_FULL=1 VLMDATA_BIN=$(CURDIR)/$(RELEASE) $(PYTHON) -m pytest -q Tests/parity/test_composition.py

## crashtest: each writing stage SIGKILLed at seeded random points, rerun and compared with a clean run (catalog
## dump, shard hashes, no temp files); `make test` runs a bounded version (2 kills per stage, small data)
CRASH_KILLS ?= 10
CRASH_SEED  ?= 1
crashtest: deps venv build
	$(PYTHON) scripts/crashtest.py --bin $(RELEASE) --kills $(CRASH_KILLS) --seed $(CRASH_SEED)

## fuzz: libFuzzer with ASan (swiftc -sanitize=fuzzer,address) on the tar reader, npy parser, COCO and LLaVA JSON
## readers, tokenizer.json loader + encoder and image probe + decoder, FUZZ_SECONDS
## each, seeded from real data; findings under .build/fuzz/findings-*/
FUZZ_SECONDS ?= 60
fuzz: deps venv build
	FUZZ_SECONDS=$(FUZZ_SECONDS) VLMDATA_BIN=$(CURDIR)/$(RELEASE) PYTHON=$(PYTHON) bash scripts/fuzz.sh

clean:
	rm -rf .build vlmdata-work
