"""Drive the running app with N concurrent gradio_client callers on loopback and report what they got.

    python app.py &                                   # or any URL of the app on this machine
    python benchmarks/load.py --url http://127.0.0.1:7860/ --callers 8 --requests 64

Each caller sends requests round-robin across the app's endpoints (both classifiers, the checklist evaluator, the
image + narrative diagnosis and text-to-image generation) with images drawn by the project, checks every answer
against the library's own answer for the same input (same models, same preprocessing; the same pixels for a
generated image), and records latency. Bounded: --requests in total and --timeout seconds at most; it stops by
itself.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradio_client import Client, handle_file  # noqa: E402

from benchmarks.report import emit  # noqa: E402
from magic.classifiers import load_classifier  # noqa: E402
from magic.evaluation import Checklist, load_evaluator  # noqa: E402
from magic.generation import GenerationSettings, Generator  # noqa: E402
from magic.images import open_image  # noqa: E402
from magic.narratives import load_narrative_classifier  # noqa: E402
from magic.narratives.fusion import DiagnosisPipeline  # noqa: E402
from scripts.make_examples import _cell, _lesion  # noqa: E402

CLASSIFIERS = {"/classify_wbc": ("magic-suite/wbc-classifier", _cell, ["neutrophil", "lymphocyte", "eosinophil"]),
               "/classify_skin": ("magic-suite/skin-classifier", _lesion, ["nevus", "melanoma", "vascular"])}
NARRATIVE = "I am 63. The spot on my nose grew over the last months and sometimes bleeds; it does not itch."


@dataclass
class Case:
    """One request and the answer the library gives for the same input."""

    endpoint: str
    inputs: tuple
    expected: str
    answer: Callable[[tuple], str]  # the endpoint's outputs -> the comparable answer


def build_cases(work_dir: Path) -> list[Case]:
    cases = []
    for endpoint, (model_id, draw, kinds) in CLASSIFIERS.items():
        classifier = load_classifier(model_id)
        for seed, kind in enumerate(kinds):
            path = work_dir / f"{endpoint.strip('/')}_{kind}.png"
            draw(kind, seed).save(path)
            cases.append(Case(endpoint, (handle_file(str(path)), 1),
                              classifier.predict(open_image(path), top_k=1)[0].labels[0],
                              lambda outputs: outputs[0]["label"]))

    evaluator = load_evaluator("embedded", cache=None)
    for seed, kind in enumerate(["lymphocyte", "neutrophil"]):
        path = work_dir / f"evaluate_{kind}.png"
        _cell(kind, seed).save(path)
        verdict = evaluator.evaluate(open_image(path), Checklist.from_catalog("pbc", kind))
        cases.append(Case("/evaluate", (handle_file(str(path)), "pbc", kind, "not specified"), str(verdict.scores),
                          lambda outputs: str(outputs[2]["scores"])))

    pipeline = DiagnosisPipeline(load_classifier("magic-suite/skin-classifier"), load_narrative_classifier())
    path = work_dir / "diagnose_lesion.png"
    _lesion("melanoma", 7).save(path)
    top = next(iter(pipeline(open_image(path), NARRATIVE).probabilities))
    cases.append(Case("/diagnose", (handle_file(str(path)), NARRATIVE), top,
                      lambda outputs: max(outputs[2]["probabilities"], key=outputs[2]["probabilities"].get)))
    generator = Generator.from_pretrained("magic-suite/wbc-generator")
    for seed, kind in enumerate(["lymphocyte", "platelet"]):
        image = generator.text_to_image(generator.info.prompt(kind), GenerationSettings(steps=10, guidance=5.0,
                                                                                        seed=seed))[0]
        cases.append(Case("/generate", (kind, "text-to-image", None, seed, 0.3, 5.0, 10, 1), _pixels_digest(image),
                          lambda outputs: _pixels_digest(open_image(outputs[0]["image"]))))
    return cases


def _pixels_digest(image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64, help="Requests in total (bounded).")
    parser.add_argument("--timeout", type=float, default=600, help="Give up after this many seconds.")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("This benchmark only targets the app on this machine (loopback).")

    cases = build_cases(Path(tempfile.mkdtemp(prefix="magic-load-")))
    clients = [Client(args.url, verbose=False) for _ in range(args.callers)]
    deadline = time.time() + args.timeout

    def call(index: int) -> dict:
        case = cases[index % len(cases)]
        if time.time() > deadline:
            return {"endpoint": case.endpoint, "status": "skipped (time limit)"}
        started = time.perf_counter()
        try:
            answer = case.answer(clients[index % args.callers].predict(*case.inputs, api_name=case.endpoint))
            status = "ok" if answer == case.expected else f"wrong ({answer} != {case.expected})"
        except Exception as error:  # a lost or failed request is a finding, not a crash of the benchmark
            status = f"error ({type(error).__name__}: {error})"
        return {"endpoint": case.endpoint, "status": status, "latency_s": time.perf_counter() - started}

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.callers) as pool:
        results = list(pool.map(call, range(args.requests)))
    elapsed = time.perf_counter() - started
    latencies = sorted(r["latency_s"] for r in results if "latency_s" in r)
    report = {
        "url": args.url, "callers": args.callers, "requests": args.requests, "wall_s": elapsed,
        "throughput_req_per_s": len(latencies) / elapsed,
        "p50_latency_s": statistics.median(latencies) if latencies else None,
        "p95_latency_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "per_endpoint": {endpoint: {"n": len(values), "p50_latency_s": statistics.median(values)}
                         for endpoint in sorted({r["endpoint"] for r in results})
                         for values in [[r["latency_s"] for r in results if r["endpoint"] == endpoint
                                         and "latency_s" in r]] if values},
        "ok": sum(r["status"] == "ok" for r in results),
        "wrong": [r for r in results if r["status"].startswith("wrong")],
        "errors": [r for r in results if r["status"].startswith(("error", "skipped"))],
    }
    emit(report, args.output)


if __name__ == "__main__":
    main()
