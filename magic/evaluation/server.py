"""Serve an evaluator on an OpenAI-compatible endpoint (``python -m magic serve-evaluator``).

``POST /v1/chat/completions`` takes the checklist prompt (as ``magic.evaluation.prompt.build_prompt`` writes it)
and one image as a base64 data URL, judges it and answers in the paper's list format (``[1, 0, 1, 0, 0]`` then one
reason per line); ``GET /v1/models`` lists the served model. Remote image URLs are refused (the server fetches
nothing). With ``api_key_env`` set, requests must carry ``Authorization: Bearer <that key>``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..images import ImageInputError, open_image
from .base import Evaluator
from .prompt import format_answer, parse_prompt
from .verdict import Checklist, EvaluationError

MAX_REQUEST_BYTES = 25 * 1024 * 1024


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def _split_message(messages) -> tuple[str, bytes]:
    """The last user message's text and its one image (decoded from a data URL)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list.")
    user = [message for message in messages if isinstance(message, dict) and message.get("role") == "user"]
    if not user:
        raise ValueError("No user message.")
    content = user[-1].get("content")
    texts, images = [], []
    for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "image_url":
            url = part.get("image_url", {})
            url = url.get("url", "") if isinstance(url, dict) else str(url)
            if not url.startswith("data:") or ";base64," not in url:
                raise ValueError("Only base64 data URLs are accepted as images (data:image/png;base64,...).")
            try:
                images.append(base64.b64decode(url.split(";base64,", 1)[1], validate=True))
            except (binascii.Error, ValueError) as error:
                raise ValueError("The image data URL is not valid base64.") from error
    if len(images) != 1:
        raise ValueError(f"Send exactly one image per request; got {len(images)}.")
    return "\n".join(texts), images[0]


def create_app(evaluator: Evaluator, model_name: str = "magic-checklist-evaluator",
               api_key_env: str | None = None) -> FastAPI:
    """A FastAPI app answering chat completions with ``evaluator``'s verdicts."""
    app = FastAPI(title="MAGIC checklist evaluator", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    lock = threading.Lock()  # one judgement at a time: the model is shared and CPU-bound

    def authorised(request: Request) -> bool:
        if not api_key_env:
            return True
        expected = os.environ.get(api_key_env, "")
        given = request.headers.get("authorization", "")
        return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())

    @app.get("/v1/models")
    def models(request: Request):
        if not authorised(request):
            return _error(401, "Invalid or missing API key.", "authentication_error")
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "magic-suite"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if not authorised(request):
            return _error(401, "Invalid or missing API key.", "authentication_error")
        if int(request.headers.get("content-length") or 0) > MAX_REQUEST_BYTES:
            return _error(413, f"Request larger than {MAX_REQUEST_BYTES // 2**20} MB.")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The body is not JSON.")
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object.")
        try:
            prompt, image_bytes = _split_message(body.get("messages"))
            condition, items = parse_prompt(prompt)
            image = open_image(image_bytes)
        except (ValueError, ImageInputError) as error:
            return _error(400, str(error))
        checklist = Checklist(condition_id=condition or "custom", condition_name=condition or "custom",
                              items=tuple(items), version="prompt")
        def judge():
            with lock:
                return evaluator.evaluate(image, checklist)

        try:
            verdict = await run_in_threadpool(judge)  # CPU-bound: keep the event loop free
        except EvaluationError as error:
            return _error(500, str(error), "server_error")
        content = format_answer(verdict.scores, verdict.rationales)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or model_name),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    return app


def serve(evaluator: Evaluator, host: str = "127.0.0.1", port: int = 8000,
          model_name: str = "magic-checklist-evaluator", api_key_env: str | None = None) -> None:
    """Run the server until interrupted."""
    import uvicorn

    uvicorn.run(create_app(evaluator, model_name, api_key_env), host=host, port=port, log_level="info")
