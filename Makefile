# One command to open the course, one to test it. Each makes its own virtual environment in .venv.
#   make lab     set up and open the course in JupyterLab
#   make test    set up and run the unit tests and every notebook (smoke profile, CPU, offline-capable)
#   make lint    ruff: lint (pyflakes, pycodestyle, import order), 120 columns
# CPU-only torch (small download):  make lab TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: lab test lint execute install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(PIP_TORCH_FLAGS)
	touch $@

$(VENV)/.lab: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[lab,offline]"
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[lab,test,offline,slides]"
	touch $@

install: $(VENV)/.lab
install-test: $(VENV)/.test

# extra JupyterLab options, e.g. LAB_ARGS="--no-browser --port 8899" (add --allow-root in a root container)
LAB_ARGS ?=
lab: $(VENV)/.lab
	$(PY) -m jupyter lab notebooks/ $(LAB_ARGS)

# Style first: seconds, and a failure names the file and line. The settings are in pyproject.toml ([tool.ruff]).
# LINT_PATHS narrows it, e.g. make lint LINT_PATHS=lora_lab/experiments/bench.py
LINT_PATHS ?= lora_lab tests
lint: $(VENV)/.test
	$(PY) -m ruff check $(LINT_PATHS)

# Unit tests, then every notebook under nbval in the smoke profile (tiny random GPT-2, data subset).
# Slow tests (other processes: the CLI, torchrun, kill -9) run here too; pytest -m "not slow" skips them locally.
# The student edition's full execution (marker "edition") runs in make test-colab instead, on Colab's versions.
test: lint $(VENV)/.test
	LORA_LAB_PROFILE=smoke LORA_LAB_PROGRESS=0 MPLBACKEND=Agg PYTHONWARNINGS=ignore::DeprecationWarning \
	  $(PY) -m pytest tests notebooks -m "not edition" --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg \
	  --nbval-cell-timeout=900 -p no:cacheprovider --durations=15

# Re-run every notebook top to bottom in the offline profile (real MiniLM, CPU) and save its outputs: what
# the committed notebooks show. About an hour on 2 CPU cores.
execute: $(VENV)/.test
	cd notebooks && for nb in *.ipynb; do \
	  echo "$$nb"; LORA_LAB_PROFILE=offline LORA_LAB_PROGRESS=0 ../$(PY) -m jupyter nbconvert --to notebook \
	    --execute --inplace --ExecutePreprocessor.timeout=3600 "$$nb" || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache

# The student edition (build/student/ and build/lora-lab-student.zip): every lesson with its outputs cleared and
# the cells tagged "solution" removed; solutions.ipynb left out (lora_lab/course/student.py documents the tags). Seconds.
.PHONY: student slides
student: $(VENV)/.lab
	$(PY) -m lora_lab.student build/student

# reveal.js slides of every lesson (build/slides/<name>.slides.html), not executed, with reveal.js 5 and MathJax 3
# next to them (no CDN), copied from PyPI packages that ship them (the slides extra): no network once installed.
# Open with: python -m http.server -d build/slides (then <name>.slides.html). JupyterLab's RISE is in make lab.
$(VENV)/.slides: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[lab,slides]"
	touch $@

slides: $(VENV)/.slides
	$(PY) -m lora_lab.slides build/slides

# The widgets in a real JupyterLab driven by headless Chromium (a few minutes): notebooks 01 and 02, and the
# widget cells of 04 and 06 on the smoke profile's tiny model. Needs Debian's chromium (apt-get install chromium)
# or LORA_LAB_CHROMIUM=/path/to/chrome; Playwright's own browser download is not used. Screenshots go to
# tests/browser/screenshots/ (git-ignored).
$(VENV)/.browser: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[lab,test,offline,browser]"
	touch $@

.PHONY: test-browser
test-browser: $(VENV)/.browser
	LORA_LAB_BROWSER_TEST=1 PYTHONWARNINGS=ignore::DeprecationWarning \
	  $(PY) -m pytest tests/browser -v -p no:cacheprovider

# The course on Colab's preinstalled versions (constraints/colab.txt: ipywidgets 7.7.1, ipykernel 6.17.1,
# IPython 7.34.0, notebook 6.5.7, ...) in its own environment, .venv-colab: install lora-lab as the notebooks'
# Colab cells do and check that no preinstalled package changes, then the widgets' unit tests, the student edition
# of every lesson executed top to bottom and the solutions under nbval (smoke profile): every notebook runs on
# Colab's versions. torch is the CPU wheel $(COLAB_TORCH), not Colab's CUDA build.
COLAB_VENV ?= .venv-colab
COLAB_PY := $(COLAB_VENV)/bin/python
COLAB_TORCH ?= torch==2.13.0
$(COLAB_VENV)/.colab: constraints/colab.txt
	rm -rf $(COLAB_VENV)
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_PY) -m pip install --quiet "$(COLAB_TORCH)" $(PIP_TORCH_FLAGS)
	$(COLAB_PY) -m pip install --quiet -r constraints/colab.txt "$(COLAB_TORCH)"
	$(COLAB_PY) constraints/colab_install_check.py baseline
	touch $@

.PHONY: test-colab
test-colab: $(COLAB_VENV)/.colab
	$(COLAB_PY) constraints/colab_install_check.py install
	$(COLAB_PY) -m pip install --quiet -c constraints/colab.txt "nbval>=0.11"  # test tool only, after the check
	LORA_LAB_PROFILE=smoke LORA_LAB_PROGRESS=0 MPLBACKEND=Agg PYTHONWARNINGS=ignore::DeprecationWarning \
	  $(COLAB_PY) -m pytest tests/test_widgets.py tests/test_student_edition.py notebooks/solutions.ipynb \
	  --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=900 -p no:cacheprovider --durations=5

# Each lesson's run time per profile (benchmarks/lesson-times.json: offline from the committed notebooks' own
# execution metadata, smoke measured here with nbclient, a few minutes), then TEACHING.md's table from it.
# Run it after make execute. LESSON_PROFILES=offline skips the smoke runs.
LESSON_PROFILES ?= offline,smoke
# The course's main path without the internet (issue 25): notebooks 3-8 in the real profile, quick mode
# (LORA_LAB_QUICK=1), against a stand-in hub on 127.0.0.1 serving a 124M-shaped GPT-2 with random weights
# (tests/real_quick.py: about 3.5 minutes on 2 cores). Its numbers mean nothing; it proves the real path runs.
.PHONY: test-real-quick
test-real-quick: $(VENV)/.test
	PYTHONWARNINGS=ignore::DeprecationWarning $(PY) tests/real_quick.py

.PHONY: lesson-times
lesson-times: $(VENV)/.test
	$(PY) -m lora_lab.lessons times --profiles $(LESSON_PROFILES)
	$(PY) -m lora_lab.lessons table --write TEACHING.md

# The course website (build/site/): the committed notebooks, not re-executed, with Sphinx + myst-nb, warnings as
# errors, then a check of every internal link and image and that nothing loads from another host (site/build.py).
# About 10 s on 2 CPU cores. make test-site opens it in headless Chromium (math, figures, search; screenshots
# in tests/browser/screenshots/).
$(VENV)/.site: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[site]"
	touch $@

.PHONY: site test-site
site: $(VENV)/.site
	$(PY) site/build.py

test-site: site $(VENV)/.browser
	LORA_LAB_BROWSER_TEST=1 PYTHONWARNINGS=ignore::DeprecationWarning \
	  $(PY) -m pytest tests/browser/test_site.py -v -p no:cacheprovider
