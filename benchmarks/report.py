"""The one way every benchmark reports: indented JSON on stdout and, given a path, the same in a file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, output: str | Path | None = None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
