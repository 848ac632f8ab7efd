# clln: `make demo` and `make test` set everything up on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KERNELS := $(VENV)/.kernels
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-fast test-slow lint bench clean

setup: $(STAMP) $(KERNELS)

$(STAMP): pyproject.toml constraints.txt
	@command -v iverilog >/dev/null 2>&1 || { \
	    echo "installing Icarus Verilog (apt)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iverilog; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all,test]'
	@touch $(STAMP)

# compile the golden models' numba kernels into their cache now, not at the first run
$(KERNELS): $(STAMP) $(wildcard sim/*.py)
	$(PY) -m clln.sim.kernels
	@touch $(KERNELS)

demo: setup
	$(VENV)/bin/clln train paper-xor
	$(VENV)/bin/clln generate paper-xor -o build/demo/paper-xor
	$(VENV)/bin/clln verify paper-xor --sim icarus --ticks 2000
	$(VENV)/bin/clln build paper-xor --board tangnano9k --build-dir build/demo/tangnano9k
	$(VENV)/bin/clln run paper-xor --sim --fabric serial --epochs 20 --seed 1

# two workers (CI has 2 cores); a module's simulated boards stay on one worker (loadgroup)
test: setup
	$(PY) -m pytest -n 2 --dist loadgroup

# no simulators, no board builds (tiers: markers in tests/conftest.py)
test-fast: setup
	$(PY) -m pytest -n 2 -m "not sim and not build and not slow_build and not slow_sim"

# everything, the ULX3S / Tang Nano 9K builds and the simulated-board soaks included
test-slow: setup
	CLLN_SLOW_BUILDS=1 CLLN_SLOW_SIMS=1 $(PY) -m pytest -n 2 --dist loadgroup

lint: setup
	$(VENV)/bin/ruff check

bench: setup
	@command -v ngspice >/dev/null 2>&1 || { \
	    echo "installing ngspice (apt)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ngspice; }
	$(PY) bench/golden_models.py
	$(PY) bench/settling.py
	$(PY) bench/scaling.py
	$(PY) bench/momentum.py
	$(PY) bench/sweep.py
	$(PY) bench/checkpoint.py

clean:
	rm -rf $(VENV) build *.egg-info
