"""The app in a real browser (Debian's headless Chromium driven by Playwright): a person classifies a cell."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLE = Path(__file__).resolve().parent.parent / "spaces" / "examples" / "wbc" / "drawn_lymphocyte.png"
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
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium (apt-get install chromium).")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        yield page
        browser.close()


def test_a_person_uploads_a_cell_and_sees_the_prediction(app_url, page, tmp_path):
    from playwright.sync_api import expect

    page.goto(app_url)
    expect(page.get_by_text("Research demo, not a medical device").first).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="White blood cells").click()
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.get_by_role("button", name="Classify").first.click()
    expect(page.get_by_text("Expert checklist").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Where the model looked (Grad-CAM)").first).to_be_visible()
    label = page.locator(".output-class, [data-testid='label-output-value']").first
    expect(label).not_to_be_empty(timeout=30_000)
    page.screenshot(path=str(tmp_path / "wbc.png"), full_page=True)
