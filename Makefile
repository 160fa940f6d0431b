# The two commands a newcomer needs: `make book` and `make test`.
# Every target creates .venv from requirements.txt when it is missing or out of date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: book test unit fastbook colab serve student bench clean venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## book: build the HTML book, executing every notebook in full mode through the jupyter-cache
book: $(STAMP)
	$(PY) tools/book.py full

## test: unit tests, then the strict book build with every notebook executed in fast mode
test: unit fastbook

unit: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

fastbook: $(STAMP)
	$(PY) tools/book.py fast

## colab: the Colab twin: Colab's package versions, a kernel where google.colab imports; every
## notebook's setup cell and cells run as on Colab (fast mode); fails if a Colab package changes
## version, a cell errors, or a notebook shows fewer figures than the book glues (tools/colab.py)
colab: $(STAMP)
	$(PY) tools/colab.py

## serve: serve the built book on localhost
serve:
	@test -f _build/html/index.html || $(MAKE) book
	$(PY) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

## student: a copy of the notebooks with the solutions stripped, in _build/student
student: $(STAMP)
	$(PY) -m attention_course.grading strip notebooks _build/student

## bench: performance benchmarks (ratios against references measured in the same run)
bench: $(STAMP)
	$(PY) -m pytest -q -s -p no:cacheprovider -o python_files="bench_*.py" tests/benchmarks

clean:
	rm -rf _build .pytest_cache .hypothesis
