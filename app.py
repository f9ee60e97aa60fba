"""The MAGIC suite: every demo as a tab of one app. `python app.py` serves it on http://127.0.0.1:7860."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from spaces import diagnose, evaluate, generate, skin, wbc  # noqa: E402
from spaces.common import DELETE_CACHE, MAX_FILE_SIZE  # noqa: E402


def create_app() -> gr.Blocks:
    """One gr.Blocks with a tab per demo; each tab is its module's create_demo()."""
    with gr.Blocks(title="MAGIC suite", delete_cache=DELETE_CACHE) as app:
        gr.Markdown("# MAGIC suite\nMedically accurate synthetic images and the diagnostic models they improve.")
        with gr.Tab("White blood cells"):
            wbc.create_demo()  # a Blocks created inside another renders in place
        with gr.Tab("Skin lesions"):
            skin.create_demo()
        with gr.Tab("Evaluate"):
            evaluate.create_demo()
        with gr.Tab("Diagnose"):
            diagnose.create_demo()
        with gr.Tab("Generate"):
            generate.create_demo()
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    create_app().queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_SIZE, show_error=True
    )


if __name__ == "__main__":
    main()
