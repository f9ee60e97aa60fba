"""The app in a real browser (Debian's headless Chromium driven by Playwright): a person uses each tab."""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLES = Path(__file__).resolve().parent.parent / "spaces" / "examples"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def app_url():
    from app import create_app

    app = create_app().queue(default_concurrency_limit=2)
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        app.close()


@pytest.fixture(scope="module")
def page():
    import playwright.sync_api as playwright_api  # a test dependency: missing it fails, never skips
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium (apt-get install chromium).")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        yield page
        browser.close()


@pytest.mark.parametrize("tab, example, checklist_title", [
    ("White blood cells", "wbc/drawn_lymphocyte.png", "pbc v"),
    ("Skin lesions", "skin/drawn_nevus.png", "ham10000 v"),
])
def test_a_person_uploads_an_image_and_sees_prediction_and_checklist(app_url, page, tmp_path, tab, example,
                                                                       checklist_title):
    from playwright.sync_api import expect

    panel = _open_tab(page, app_url, tab, example)
    panel.get_by_role("button", name="Classify").click()
    expect(panel.get_by_text("Expert checklist").first).to_be_visible(timeout=60_000)
    expect(panel.get_by_text(checklist_title).first).to_be_visible()
    expect(panel.get_by_text("Where the model looked (Grad-CAM)").first).to_be_visible()
    _screenshot(page, tmp_path, example.split("/")[0])


def _open_tab(page, app_url: str, tab: str, example: str):
    """Open the app, switch to ``tab``, check its notice and upload ``example``; returns the tab's panel."""
    from playwright.sync_api import expect

    page.goto(app_url)
    page.get_by_role("tab", name=tab).click()
    panel = page.get_by_role("tabpanel")
    expect(panel.get_by_text("Research demo, not a medical device").first).to_be_visible(timeout=30_000)
    panel.locator("input[type=file]").first.set_input_files(str(EXAMPLES / example))
    return panel


def _screenshot(page, tmp_path, name: str) -> None:
    """MAGIC_SCREENSHOTS=docs/screenshots python -m pytest tests/test_browser.py refreshes the README's screenshots."""
    folder = Path(os.environ.get("MAGIC_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(1000)  # let the outputs' fade-in finish
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_a_person_checks_an_image_against_a_checklist(app_url, page, tmp_path):
    from playwright.sync_api import expect

    panel = _open_tab(page, app_url, "Evaluate", "wbc/drawn_lymphocyte.png")
    panel.get_by_role("button", name="Evaluate").click()
    expect(panel.get_by_text("criteria met").first).to_be_visible(timeout=60_000)
    expect(panel.get_by_text(re.compile("✅ pass|❌ fail")).first).to_be_visible()  # one row per checklist item
    _screenshot(page, tmp_path, "evaluate")



def test_a_clinician_ticks_checklist_items_and_sees_agreement(app_url, page, tmp_path):
    from playwright.sync_api import expect

    panel = _open_tab(page, app_url, "Evaluate", "wbc/drawn_lymphocyte.png")
    panel.get_by_text("Expert review: label the checklist yourself").click()
    items = panel.get_by_role("checkbox")
    expect(items).to_have_count(5, timeout=30_000)  # one per checklist item of the chosen condition
    items.nth(0).check()
    items.nth(2).check()
    panel.get_by_role("button", name="Add my label").click()
    expect(panel.get_by_text(re.compile(r"on 1 image\(s\)")).first).to_be_visible(timeout=60_000)
    expect(panel.get_by_text("pooled Cohen's kappa").first).to_be_visible()
    expect(panel.get_by_text(re.compile("expert_labels")).first).to_be_visible()  # the labels, to download

def test_a_person_describes_a_lesion_and_gets_a_ranked_diagnosis(app_url, page, tmp_path):
    from playwright.sync_api import expect

    panel = _open_tab(page, app_url, "Diagnose", "skin/drawn_melanoma.png")
    panel.get_by_role("textbox").first.fill("I am 70. The spot on my back grew and it bleeds; it does not itch.")
    panel.get_by_role("button", name="Diagnose").click()
    expect(panel.get_by_text("Narrative evidence understood").first).to_be_visible(timeout=60_000)
    expect(panel.get_by_text("Ranked diagnosis").first).to_be_visible()
    expect(panel.get_by_text("Bleeding").first).to_be_visible()
    _screenshot(page, tmp_path, "diagnose")


def test_a_person_generates_synthetic_cells(app_url, page, tmp_path):
    from playwright.sync_api import expect

    panel = _open_tab(page, app_url, "Generate", "wbc/drawn_lymphocyte.png")
    panel.get_by_role("button", name="Generate").click()
    expect(panel.get_by_text(re.compile(r"· seed 3$")).first).to_be_attached(timeout=120_000)  # the 4th image
    expect(panel.locator("img[src*='/file=']").first).to_be_visible()
    _screenshot(page, tmp_path, "generate")


def test_a_person_runs_the_feedback_loop_and_sees_scores_per_round(app_url, page, tmp_path):
    from playwright.sync_api import expect

    panel = _open_tab(page, app_url, "Generate", "wbc/drawn_lymphocyte.png")
    panel.get_by_text("Evaluator feedback loop (MAGIC)").click()
    expect(panel.get_by_label("classifier", exact=True)).to_be_visible()  # the other source of feedback
    expect(panel.get_by_label("checklist evaluator", exact=True)).to_be_checked()  # the paper's, by default
    for slider, default, value in (("Rounds", "2", "1"), ("Images per round", "8", "4")):  # a quick first try
        box = panel.get_by_label(f"number input for {slider}", exact=True)
        expect(box).to_have_value(default)  # the opened accordion's sliders are mounted with their defaults
        box.fill(value)
        box.press("Enter")
        try:
            expect(box).to_have_value(value, timeout=3_000)
        except AssertionError:  # under load, the slider's first sync after opening can overwrite what was typed
            box.fill(value)
            box.press("Enter")
            expect(box).to_have_value(value)
    panel.get_by_role("button", name="Generate with feedback").click()
    expect(panel.get_by_text(re.compile(r"seed \d+ · \d/5 criteria$")).first).to_be_attached(timeout=240_000)
    expect(panel.get_by_text("evaluator_mean_score").first).to_be_visible()  # the per-round reports
    _screenshot(page, tmp_path, "generate_feedback")
