"""``tagger ui``: the real MLflow UI, opened in headless Chromium on each link it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from test_web import ensure_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUICK = ["evaluation.bootstrap_samples=0", "model.params.char_ngram_range=null"]


@pytest.fixture(scope="module")
def ui_links(tmp_path_factory):
    """Two single-split TF-IDF runs and one cross-validated run in a fresh store; ``tagger ui`` on it."""
    from conftest import TRAIN_FILE, read_jsonl, write_jsonl

    from train.config import load_config
    from train.training.cv import cross_validate
    from train.training.pipeline import train

    home = tmp_path_factory.mktemp("ui-store")
    rows = read_jsonl(TRAIN_FILE)
    docs = set(sorted({r["doc_id"] for r in rows})[::4])
    small = write_jsonl(home / "small.jsonl", [r for r in rows if r["doc_id"] in docs][:400])
    env = {**os.environ, "TAGGER_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    old = {k: os.environ.get(k) for k in ("TAGGER_HOME", "MLFLOW_TRACKING_URI")}
    os.environ.update({k: env[k] for k in old})
    try:
        overrides = [f"data.train={small}", *QUICK, "tracking.log_model=false"]
        for name in ("tfidf_logreg", "tfidf_svm"):
            path = f"configs/topic/{name}.yaml"
            train(load_config(ROOT / path, overrides), config_path=path)
        path = "configs/topic/tfidf_logreg.yaml"
        cross_validate(load_config(ROOT / path, overrides), config_path=path, folds=3)
    finally:
        os.environ.update({k: v for k, v in old.items() if v is not None})
    port = free_port()
    log = open(home / "ui.out", "w+")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "train.cli", "ui", "--port", str(port), "--top", "3"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while "side by side" not in Path(log.name).read_text() and process.poll() is None:
        assert time.monotonic() < deadline, Path(log.name).read_text()
        time.sleep(1)
    output = Path(log.name).read_text()
    yield output
    process.terminate()  # tagger ui stops its MLflow server on SIGTERM
    process.wait(timeout=30)
    log.close()


def links_of(output: str) -> dict[str, str]:
    """``{"<view> <kind>": url}`` from the printed lines."""
    found, view = {}, None
    for line in output.splitlines():
        if re.match(r"tagger-\w+: \d+ ", line):
            view = "cv" if "cross-validated" in line else "dev"
        match = re.match(r"\s+(runs|charts|compare):\s+(\S+)", line)
        if match and view:
            found[f"{view} {match.group(1)}"] = match.group(2)
    return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    ensure_chromium()
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,900"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def wait_for(browser, css: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(ready.presence_of_all_elements_located((By.CSS_SELECTOR, css)))
    return browser.find_elements(By.CSS_SELECTOR, css)


def column(browser, metric: str) -> list[float]:
    from selenium.webdriver.common.by import By

    cells = browser.find_elements(By.CSS_SELECTOR, f'.ag-center-cols-container [col-id="metrics.`{metric}`"]')
    return [float(cell.text) for cell in cells if cell.text.strip()]


def close_assistant(browser) -> None:
    """The UI's Assistant panel takes a third of the screen; close it for the screenshots."""
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.CSS_SELECTOR, 'button[aria-label="Close"]'):
        if button.is_displayed():
            button.click()


def test_each_link_opens_the_ranked_runs(browser, ui_links, screenshots):
    from selenium.webdriver.common.by import By

    links = links_of(ui_links)
    assert set(links) == {"cv runs", "cv charts", "dev runs", "dev charts", "dev compare"}, ui_links
    for view, sort, columns in (
        ("dev", "dev/f1_macro", ["dev/f1_macro", "dev/f1_micro", "dev/hamming_loss", "seeds/f1_macro"]),
        ("cv", "cv/f1_macro_mean", ["cv/f1_macro_mean", "cv/f1_macro_std", "seeds/f1_macro"]),
    ):
        browser.get(links[f"{view} runs"])
        wait_for(browser, f'.ag-header-cell[col-id="metrics.`{sort}`"]')  # the view's state is loaded
        time.sleep(2)
        headers = [e.get_attribute("col-id") for e in browser.find_elements(By.CSS_SELECTOR, ".ag-header-cell")]
        assert "/runs" in browser.current_url and "overview" not in browser.current_url
        assert "genai" not in browser.current_url.lower()
        wanted = [f"metrics.`{name}`" for name in columns]
        assert set(wanted) <= set(headers), headers  # (the DOM's order is not the grid's)
        assert len([h for h in headers if h.startswith("metrics.")]) <= 20
        values = column(browser, sort)
        assert len(values) == (2 if view == "dev" else 1) and values == sorted(values, reverse=True)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Sort: " + sort in body and "Model training" in body
        if view == "dev":
            close_assistant(browser)
            time.sleep(1)
            browser.save_screenshot(str(screenshots / "mlflow-runs.png"))

        browser.get(links[f"{view} charts"])
        charts = wait_for(browser, "[data-testid='experiment-view-compare-runs-chart-area'], .js-plotly-plot")
        assert charts and "compareRunsMode=CHART" in browser.current_url
        if view == "dev":
            time.sleep(2)
            close_assistant(browser)
            browser.save_screenshot(str(screenshots / "mlflow-charts.png"))

    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(links["dev compare"])
    WebDriverWait(browser, 60).until(lambda b: "Run details" in b.find_element(By.TAG_NAME, "body").text)
    time.sleep(2)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Comparing 2 Runs from 1 Experiment" in body
    assert "tfidf_logreg" in body and "tfidf_svm" in body and "dev/f1_macro" in body
    close_assistant(browser)
    browser.save_screenshot(str(screenshots / "mlflow-compare.png"))
