# The README's two commands. `make run` installs and serves the app; `make test` installs the test dependencies
# (Python packages, and Debian's Chromium for the browser tests when it is missing) and runs the tests.
.PHONY: run test chromium examples

run:
	pip install -r requirements.txt && python app.py

test: chromium
	pip install -r requirements-dev.txt && python -m pytest

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

examples:
	python scripts/make_examples.py
