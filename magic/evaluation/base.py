"""The evaluator interface: image + checklist -> Verdict, batched and cached; the chat-model retry loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PIL import Image

from ..images import open_image
from .cache import VerdictCache, cache_key, image_digest
from .prompt import build_prompt, parse_answer
from .verdict import Checklist, EvaluationError, MalformedAnswerError, Verdict

logger = logging.getLogger("magic.evaluation")


def as_checklist(condition: Checklist | str) -> Checklist:
    """A Checklist, or ``"CATALOG:CONDITION"``."""
    return condition if isinstance(condition, Checklist) else Checklist.parse(condition)


class Evaluator:
    """Judges images against checklists. Subclasses implement ``judge`` (one image, no cache); batching and the
    cache live here. ``name`` and ``version`` identify the backend in every Verdict and in the cache key."""

    name: str = "evaluator"
    version: str = "0"

    def __init__(self, cache: VerdictCache | None = None):
        self.cache = cache

    @property
    def backend_id(self) -> str:
        return f"{self.name}@{self.version}"

    # -- what subclasses implement
    def judge(self, image: Image.Image, checklist: Checklist) -> Verdict:
        raise NotImplementedError

    def judge_batch(self, images: Sequence[Image.Image], checklists: Sequence[Checklist]) -> list[Verdict]:
        return [self.judge(image, checklist) for image, checklist in zip(images, checklists, strict=True)]

    # -- the public interface
    def evaluate(self, image, condition: Checklist | str) -> Verdict:
        """Judge one image (path, bytes, PIL image or array) against one condition's checklist."""
        return self.evaluate_batch([image], [condition])[0]

    def evaluate_batch(self, images: Sequence,
                       conditions: Sequence[Checklist | str] | Checklist | str) -> list[Verdict]:
        """Judge many images; one condition for all or one per image. Cached verdicts are not judged again."""
        if isinstance(conditions, (Checklist, str)):
            conditions = [conditions] * len(images)
        if len(conditions) != len(images):
            raise ValueError(f"{len(images)} images but {len(conditions)} conditions.")
        opened, digests = {}, {}  # the same input object (one image against many checklists) is opened once
        for image in images:
            if id(image) not in opened:
                opened[id(image)] = open_image(image)
        pictures = [opened[id(image)] for image in images]
        checklists = [as_checklist(condition) for condition in conditions]
        results: list[Verdict | None] = [None] * len(pictures)
        keys: list[str | None] = [None] * len(pictures)
        if self.cache is not None:
            for index, (picture, checklist) in enumerate(zip(pictures, checklists)):
                if id(picture) not in digests:
                    digests[id(picture)] = image_digest(picture)
                keys[index] = cache_key(digests[id(picture)], checklist, self.backend_id)
                results[index] = self.cache.get(keys[index])
        todo = [index for index, result in enumerate(results) if result is None]
        if todo:
            fresh = self.judge_batch([pictures[i] for i in todo], [checklists[i] for i in todo])
            for index, verdict in zip(todo, fresh, strict=True):
                results[index] = verdict
                if self.cache is not None:
                    self.cache.put(keys[index], verdict)
        return results  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend_id!r}, cache={self.cache!r})"


class ChatEvaluator(Evaluator):
    """A backend that asks a vision-language model with the checklist prompt and parses its 0/1 list.

    Malformed answers are asked again up to ``malformed_retries`` times; then an EvaluationError names the
    backend and quotes the last answer. They are never turned into zeros.
    """

    def __init__(self, cache: VerdictCache | None = None, malformed_retries: int = 2):
        super().__init__(cache)
        self.malformed_retries = malformed_retries

    def complete(self, image: Image.Image, prompt: str, attempt: int = 0) -> str:
        """The model's answer; ``attempt`` > 0 on retries (backends then sample, so the answer can change)."""
        raise NotImplementedError

    def judge(self, image: Image.Image, checklist: Checklist) -> Verdict:
        prompt = build_prompt(checklist)
        last: MalformedAnswerError | None = None
        for attempt in range(self.malformed_retries + 1):
            answer = self.complete(image, prompt, attempt)
            try:
                scores, reasons = parse_answer(answer, len(checklist.items))
            except MalformedAnswerError as error:
                last = error
                logger.warning("%s: malformed answer (attempt %d of %d): %s", self.backend_id, attempt + 1,
                               self.malformed_retries + 1, error)
                continue
            return Verdict(scores=scores, rationales=reasons, condition_id=checklist.condition_id,
                           checklist_version=checklist.version, backend=self.name, backend_version=self.version,
                           items=list(checklist.items), valid_image=any(scores) or not _says_invalid(answer),
                           raw_answer=answer)
        snippet = (last.answer if last else "")[:300]
        raise EvaluationError(f"{self.backend_id} gave no valid 0/1 list for {checklist.condition_id} after "
                              f"{self.malformed_retries + 1} attempts ({last}); last answer: {snippet!r}")


def _says_invalid(answer: str) -> bool:
    text = answer.lower()
    return "not a valid" in text or "invalid" in text or "does not show" in text
