# The two commands a newcomer needs: `make book` and `make test`.
# Every target creates .venv from requirements.txt when it is missing or out of date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: book test unit fastbook browser colab publish repository serve student assignment grade gradescope bench seeds clean venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## book: build the HTML book, executing every notebook in full mode through the jupyter-cache
book: $(STAMP)
	$(PY) tools/book.py full

## test: unit tests, the strict book build with every notebook executed in fast mode, and every
## page of that build checked in headless Chromium
test: unit fastbook browser

unit: $(STAMP)
	$(PY) -m pytest -q -n 2 --ignore=tests/browser tests

fastbook: $(STAMP)
	$(PY) tools/book.py fast

## browser: open every page of the strict fast build in Debian's Chromium (installed when missing,
## as root) and check it as a reader sees it; screenshots in _build/screens (tools/browser.py)
browser: $(STAMP)
	@test -f _build/fast/_build/html/index.html || $(MAKE) fastbook
	$(PY) tools/browser.py _build/fast/_build/html
	$(PY) -m pytest -q -p no:cacheprovider tests/browser

## publish: push the full book (_build/html, built by `make book`) to the gh-pages branch
publish: $(STAMP)
	@test -f _build/html/index.html || $(MAKE) book
	$(VENV)/bin/ghp-import -n -p -f _build/html

## repository: point the course at another repository (a fork): make repository URL=https://github.com/you/fork
repository: $(STAMP)
	$(PY) tools/repository.py $(URL)

## colab: the Colab twin: Colab's package versions, a kernel where google.colab imports; every
## notebook's setup cell and cells run as on Colab (fast mode); fails if a Colab package changes
## version, a cell errors, or a notebook shows fewer figures than the book glues (tools/colab.py)
colab: $(STAMP)
	$(PY) tools/colab.py

## serve: serve the built book on localhost
serve:
	@test -f _build/html/index.html || $(MAKE) book
	$(PY) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

## seeds: the seed study: every chapter (or CHAPTER=NN) in full mode under seed offsets 0, 1, 2
## (SEEDS=0,1,2,3 for more), each into its full build's cache; writes the tables
## src/attention_course/seed_study/NN_slug.json and book/seed_study.md (tools/seeds.py)
seeds: $(STAMP)
	$(PY) tools/seeds.py $(CHAPTER)

## student: a copy of the notebooks with the solutions stripped, in _build/student
student: $(STAMP)
	$(PY) -m attention_course.grading strip notebooks _build/student

## assignment: a chapter (01-07) as an otter-grader assignment: make assignment CHAPTER=04 writes
## _build/assignments/04_soft_search/ (student notebook, autograder.zip with hidden tests)
assignment: $(STAMP)
	@test -n "$(CHAPTER)" || { echo "usage: make assignment CHAPTER=NN"; exit 2; }
	$(PY) -m attention_course.coursework assignment $(CHAPTER)

## gradescope: what Gradescope would record for one notebook: make gradescope CHAPTER=04 SUBMISSION=NB
## runs autograder.zip as Gradescope's run_autograder does, in a scratch copy of /autograder
gradescope: $(STAMP)
	@test -n "$(CHAPTER)" -a -n "$(SUBMISSION)" || { echo "usage: make gradescope CHAPTER=NN SUBMISSION=NB.ipynb"; exit 2; }
	$(PY) -m attention_course.coursework gradescope $(CHAPTER) $(SUBMISSION)

## grade: grade every DIR/*.ipynb with otter: make grade CHAPTER=04 SUBMISSIONS=DIR writes
## DIR/grades.csv and DIR/feedback/ (makes the assignment first when it is missing)
grade: $(STAMP)
	@test -n "$(CHAPTER)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade CHAPTER=NN SUBMISSIONS=DIR"; exit 2; }
	@ls _build/assignments/$(CHAPTER)_*/autograder/autograder.zip >/dev/null 2>&1 || $(PY) -m attention_course.coursework assignment $(CHAPTER)
	$(PY) -m attention_course.coursework grade $(CHAPTER) $(SUBMISSIONS)

## bench: performance benchmarks (ratios against references measured in the same run); the PyTorch
## twins run in an environment of their own, _build/bench/venv (tests/benchmarks/requirements-torch.txt)
BENCH_VENV := _build/bench/venv

$(BENCH_VENV)/.installed: tests/benchmarks/requirements-torch.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r tests/benchmarks/requirements-torch.txt
	touch $@

bench: $(STAMP) $(BENCH_VENV)/.installed
	$(PY) -m pytest -q -s -p no:cacheprovider -o python_files="bench_*.py" tests/benchmarks

clean:
	rm -rf _build .pytest_cache .hypothesis
