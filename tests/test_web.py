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


def test_page_highlights_the_words_behind_each_label(browser, server, screenshots):
    """The explanations are drawn on the text (colour by direction, the label in the tooltip); the
    screenshot is the one docs/serving.md shows (``TAGGER_DOCS_SCREENSHOTS=1`` refreshes it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    text = "Iran and Iraq signed a gas supply deal in Baghdad. Militias fired rockets at a base near the border."
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "target").send_keys("closer Iran–Iraq ties")
    assert browser.find_element(By.ID, "explain").is_selected()  # on by default
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#result .sentence")) == 2)
    first = browser.find_elements(By.CSS_SELECTOR, "#result .sentence")[0]
    marks = first.find_elements(By.CSS_SELECTOR, "mark.word")
    assert marks, "no highlighted words"
    stance = first.get_attribute("data-stance")
    tagged = {stance, *[b.text for b in first.find_elements(By.CSS_SELECTOR, ".badge.topic")]}
    for mark in marks:
        assert mark.text in text
        assert {"up", "down"} & set(mark.get_attribute("class").split())
        assert mark.get_attribute("data-label") in tagged
        label = mark.get_attribute("data-label")
        assert f"supports {label}" in mark.get_attribute("title") or f"against {label}" in mark.get_attribute("title")
    assert browser.find_element(By.ID, "legend").is_displayed()
    first.find_element(By.CSS_SELECTOR, ".badge[data-task=stance]").click()  # one label's words only
    assert {m.get_attribute("data-label") for m in first.find_elements(By.CSS_SELECTOR, "mark.word")} == {stance}
    first.find_element(By.CSS_SELECTOR, ".badge[data-task=stance]").click()
    browser.set_window_size(1000, 330)
    browser.execute_script("document.getElementById('legend').scrollIntoView()")
    browser.save_screenshot(str(screenshots / "explanations.png"))
    browser.set_window_size(1200, 900)
    assert (screenshots / "explanations.png").stat().st_size > 5000


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
