# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,docs,plot,dask]"
	# the fused tsunami step, compiled once per machine (falls back to torch without a compiler)
	$(BIN)/python -c "from xldensf.simulators import tsunami_kernel as k; print(k.build_report())"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xldensf demo --output out

test: $(STAMP)
	$(BIN)/ruff check xldensf tests benchmarks
	$(BIN)/python -m pytest tests xldensf notebooks --nbmake -q
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check xldensf tests benchmarks

docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

benchmark: $(STAMP)
	$(BIN)/python benchmarks/simulators.py

clean:
	rm -rf $(VENV) docs/_build out
