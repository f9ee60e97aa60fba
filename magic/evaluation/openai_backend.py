"""Backend (a): any OpenAI-compatible chat-completions endpoint with image input (GPT-4o, vLLM, Ollama, ours).

The image goes as a base64 PNG data URL. The API key is read from an environment variable, sent only in the
``Authorization`` header and never logged or shown in ``repr``. Transport errors, 429 and 5xx answers are retried
with exponential backoff; a semaphore bounds concurrent requests.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from .base import ChatEvaluator
from .cache import VerdictCache
from .verdict import Checklist, EvaluationError, Verdict

logger = logging.getLogger("magic.evaluation.openai")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def image_data_url(image: Image.Image, max_side: int = 1024) -> str:
    """A PNG data URL of ``image`` (downscaled so its longer side is at most ``max_side``)."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIEvaluator(ChatEvaluator):
    """Judge images with a chat-completions model, e.g. ``OpenAIEvaluator("gpt-4o")`` or a local vLLM server."""

    name = "openai"

    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 1.0, max_concurrency: int = 4,
                 max_tokens: int = 300, temperature: float = 0.0, malformed_retries: int = 2,
                 cache: VerdictCache | None = None, require_key: bool | None = None):
        super().__init__(cache=cache, malformed_retries=malformed_retries)
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.version = model
        api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        local = httpx.URL(self.base_url).host in ("127.0.0.1", "localhost", "::1")
        if require_key is None:
            require_key = not local
        if require_key and not api_key:
            raise EvaluationError(f"Set the API key in the environment variable {api_key_env} (it is read from the "
                                  "environment only).")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._slots = threading.Semaphore(self.max_concurrency)

    @property
    def backend_id(self) -> str:
        return f"{self.name}:{self.base_url}:{self.model}"

    def __repr__(self) -> str:  # no key, no headers
        return (f"OpenAIEvaluator(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
                f"max_concurrency={self.max_concurrency}, cache={self.cache!r})")

    def close(self) -> None:
        self._client.close()

    def _post(self, payload: dict) -> dict:
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                with self._slots:
                    response = self._client.post("/chat/completions", json=payload)
            except httpx.TransportError as error:  # timeouts, refused connections...
                if last:
                    raise EvaluationError(f"{self.backend_id}: request failed after {attempt + 1} attempts "
                                          f"({type(error).__name__}).") from None
                logger.warning("%s: %s, retrying in %.1f s", self.backend_id, type(error).__name__, delay)
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise EvaluationError(f"{self.backend_id}: the answer is not JSON.") from None
                if response.status_code not in RETRY_STATUS or last:
                    raise EvaluationError(f"{self.backend_id}: HTTP {response.status_code}: "
                                          f"{_error_message(response)}")
                retry_after = response.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
                logger.warning("%s: HTTP %d, retrying in %.1f s", self.backend_id, response.status_code, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def complete(self, image: Image.Image, prompt: str, attempt: int = 0) -> str:
        payload = {
            "model": self.model,
            "temperature": self.temperature if attempt == 0 else max(self.temperature, 0.7),
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
            ]}],
        }
        answer = self._post(payload)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EvaluationError(f"{self.backend_id}: the answer has no choices[0].message.content.") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content or ""

    def judge_batch(self, images: Sequence[Image.Image], checklists: Sequence[Checklist]) -> list[Verdict]:
        if len(images) <= 1 or self.max_concurrency == 1:
            return super().judge_batch(images, checklists)
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self.judge, images, checklists))

    def list_models(self) -> list[str]:
        response = self._client.get("/models")
        response.raise_for_status()
        return [item["id"] for item in response.json().get("data", [])]


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("detail")
        return str(message or body)[:300]
    except ValueError:
        return response.text[:300]
