"""The tagging page, driven in a real headless Chromium against the real server."""

import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def ensure_chromium() -> None:
    """Skip with the reason when the browser is absent; ``make test`` installs it (``make browser``)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromium-driver are not installed; run 'make browser' (apt-get, as root)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_page_tags_a_pasted_article(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    text = "Iran and Iraq signed a gas supply deal. Militias fired rockets at a base. The talks ended."
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "target").send_keys("closer Iran–Iraq ties")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(ready.presence_of_all_elements_located((By.CSS_SELECTOR, "#result .sentence")))
    sentences = browser.find_elements(By.CSS_SELECTOR, "#result .sentence")
    assert len(sentences) == 3
    assert "Iran and Iraq signed a gas supply deal." in sentences[0].text
    assert sentences[0].get_attribute("data-stance") in {"favor", "against", "neutral"}
    assert sentences[0].find_elements(By.CSS_SELECTOR, ".badge")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "tagging_page.png"))
    assert (ARTIFACTS / "tagging_page.png").stat().st_size > 5000


def test_page_shows_validation_errors(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "error").text)
    assert "'text' is empty" in browser.find_element(By.ID, "error").text


def test_docs_render_offline(browser, server):
    """/docs draws the API from assets the server ships (no CDN can be reached from here)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/docs")
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/tag", "/v1/admin/reload", "/readyz"} <= paths
    assert not browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper")
    scripts = [e.get_attribute("src") for e in browser.find_elements(By.TAG_NAME, "script") if e.get_attribute("src")]
    assert scripts and all(src.startswith(server) for src in scripts)
