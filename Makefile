# Shortcuts for the README's commands.
.PHONY: run test examples

run:
	pip install -r requirements.txt && python app.py

test:
	pip install -r requirements-dev.txt && python -m pytest

examples:
	python scripts/make_wbc_examples.py
