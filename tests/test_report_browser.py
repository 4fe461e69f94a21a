"""End to end in a real browser: export -> beam_jobs.auralise -> tfaural.report -> headless Chromium.

A tiny Choi CNN is exported as a SavedModel, the real auralisation job runs on
three generated tracks and one corrupt file (Beam DirectRunner), and its output
gets a listening report (plus a correlation section). The report is served by
``python -m http.server`` on loopback from the folder that holds both the output
and the report, and also opened from ``file://``, in Debian's Chromium driven by
Selenium. Checked: no console errors, every image decodes, every audio URL
answers 200, audio elements become playable, the filters change what is shown
(mouse and keyboard), and screenshots are saved to ``test-artifacts/`` (and into
the test's tmp folder).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from report_testing import LABELS, N_FFT, N_FILTERS, N_LAYERS, RATE, SECONDS, make_correlation
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tfaural import audio
from tfaural.report import write_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20.0
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "test-artifacts"
N_CARDS = N_LAYERS * N_FILTERS
HOP = N_FFT // 2
# (track id, the job's folder name): "/" in an id becomes "__"
TRACKS = (("blues.00001", "blues.00001"), ("jazz/00002", "jazz__00002"), ("rock.00003", "rock.00003"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _export_tiny_model(base: pathlib.Path) -> str:
    import keras
    import numpy as np

    from export import exporter
    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import choi_cnn, config_from_model
    from tfaural.training.run import RunInfo

    keras.utils.set_random_seed(11)
    model = choi_cnn(n_outputs=len(LABELS), n_freq=N_FFT // 2 + 1, n_frames=65, n_fft=N_FFT, hop_length=HOP,
                     n_filters=N_FILTERS, n_layers=N_LAYERS, fc_units=(8,), sample_rate=RATE)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((4, N_FFT // 2 + 1, 65, 1))).astype(np.float32)
    model.train_on_batch(x, np.eye(len(LABELS), dtype=np.float32)[[0, 1, 2, 0]])
    info = RunInfo(model=config_from_model(model), labels=LABELS, task="single-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=int(RATE * SECONDS)),
                   run_id="browser-e2e")
    return exporter.export_model(model, info, base, verify=False)  # verification has its own tests


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder with the real auralisation job's output (``auralised/``) and its report (``auralised/report/``)."""
    import numpy as np

    from beam_jobs import auralise

    root = tmp_path_factory.mktemp("browser")
    export_dir = _export_tiny_model(root / "exports")
    t = np.arange(RATE) / RATE
    rows = ["path,track_id"]
    for i, (track_id, _) in enumerate(TRACKS):
        tones = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (96 + 64 * i, 320 + 32 * i, 700 - 40 * i))
        clicks = np.zeros_like(t)
        clicks[:: 256 + 64 * i] = 0.3
        name = f"{track_id.replace('/', '-')}.wav"
        audio.write(root / "inputs" / name, (tones + clicks).astype(np.float32), sample_rate=RATE)
        rows.append(f"inputs/{name},{track_id}")
    (root / "inputs" / "broken.wav").write_bytes(b"RIFF but not really a wave file")
    rows.append("inputs/broken.wav,broken.00004")
    (root / "inputs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = root / "auralised"
    auralise.run([f"--manifest={root / 'inputs.csv'}", f"--model={export_dir}", f"--output={out}",
                  f"--clip-seconds={SECONDS}", "--offset-seconds=0.25", "--runner=DirectRunner"])
    assert sorted(p.name for p in out.glob("*/track.json")) == ["track.json"] * len(TRACKS)
    write_report(out, correlation=make_correlation(root / "correlation"), title="Browser e2e report",
                 progress=False)
    return root


@pytest.fixture(scope="module")
def server(site: pathlib.Path) -> Iterator[str]:
    """``python -m http.server`` on 127.0.0.1 serving ``site``; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen(base, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"http.server did not start on port {port}") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), f"{path} is missing: run scripts/install_system_deps.sh"
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.set_page_load_timeout(WAIT)
        browser.set_script_timeout(WAIT)
        yield browser
    finally:
        browser.quit()


# ----------------------------------------------------------------------------------------------- helpers


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(condition, message=f"timed out: {what}")


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(url)
    wait_for(browser, lambda b: b.execute_script("return document.readyState") == "complete", f"{url} loads")


def severe_console_entries(browser: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]


def check_images(browser: WebDriver) -> int:
    """Loads every (lazy) image and asserts that each decoded; returns how many."""
    browser.execute_script("for (const img of document.images) { img.loading = 'eager'; }")
    wait_for(browser, lambda b: b.execute_script("return [...document.images].every(i => i.complete)"),
             "all images complete")
    broken = browser.execute_script(
        "return [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.currentSrc || i.src)"
    )
    assert broken == [], f"images that did not load: {broken}"
    # every spectrogram fills a 2:1 box (the thumbnails' shape): no letterboxing, nothing cropped
    boxes = browser.execute_script(
        "return [...document.querySelectorAll('img.thumb')].filter(i => i.offsetParent !== null)"
        ".map(i => [i.clientWidth, i.clientHeight, getComputedStyle(i).objectFit])"
    )
    assert boxes and all(abs(w - 2 * h) <= 2 and fit == "fill" for w, h, fit in boxes), boxes
    return int(browser.execute_script("return document.images.length"))


def audio_urls(browser: WebDriver) -> list[str]:
    return list(browser.execute_script(
        "return [...document.querySelectorAll('audio[src], audio source[src]')].map(e => e.src)"
    ))


def check_urls(urls: list[str]) -> None:
    for url in urls:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            assert response.status == 200, url


def make_playable(browser: WebDriver, index: int = 0) -> dict[str, Any]:
    """Calls load() on one <audio> and waits for HAVE_FUTURE_DATA (readyState >= 3)."""
    browser.execute_script(
        "const a = document.querySelectorAll('audio')[arguments[0]];"
        "a.preload = 'auto'; a.load();", index
    )
    wait_for(browser, lambda b: b.execute_script(
        "const a = document.querySelectorAll('audio')[arguments[0]]; return a.readyState >= 3 || a.error;", index
    ), "an audio element becomes playable")
    state: dict[str, Any] = browser.execute_script(
        "const a = document.querySelectorAll('audio')[arguments[0]];"
        "return {ready: a.readyState, error: a.error && a.error.message, duration: a.duration, src: a.currentSrc};",
        index,
    )
    assert state["error"] is None and state["ready"] >= 3, state
    return state


def visible_cards(browser: WebDriver) -> int:
    return int(browser.execute_script(
        "return document.querySelectorAll('#features [data-filter-item]:not([hidden])').length"
    ))


def count_text(browser: WebDriver) -> str:
    return str(browser.execute_script("return document.querySelector('[data-filter-count]').textContent"))


def full_page_screenshot(browser: WebDriver, *paths: pathlib.Path) -> None:
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(1280, min(max(height, 800), 6000))
    try:
        browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        png = browser.get_screenshot_as_png()
    finally:
        browser.set_window_size(1280, 1000)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)


# ----------------------------------------------------------------------------------------------- tests


def test_report_over_http(site: pathlib.Path, server: str, driver: WebDriver, tmp_path: pathlib.Path) -> None:
    driver.get_log("browser")  # start with an empty log
    report = server + "auralised/report/"

    # overview: model card, track list, correlations, feature index
    open_page(driver, report + "index.html")
    assert driver.execute_script("return document.documentElement.className") == "js"
    assert check_images(driver) == len(TRACKS) + 1  # originals + figure 10
    urls = audio_urls(driver)
    assert len(urls) == len(TRACKS)
    check_urls(urls)
    assert "browser-e2e" in driver.find_element(By.ID, "model").text
    failed = driver.find_element(By.ID, "failed").text
    assert "broken.00004" in failed and "AudioDecodeError (decode)" in failed
    links = driver.find_elements(By.CSS_SELECTOR, "#feature-index [data-filter-item]:not([hidden])")
    assert len(links) == N_CARDS
    driver.find_element(By.CSS_SELECTOR, "#features input[name='feature']").send_keys("0-1")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#feature-index [data-filter-item]:not([hidden])")) == 6
    full_page_screenshot(driver, ARTIFACTS / "report-index.png", tmp_path / "report-index.png")
    assert severe_console_entries(driver) == []

    # a track page: every card's image and audio, one player becomes playable, filters
    driver.find_element(By.LINK_TEXT, TRACKS[1][0]).click()
    wait_for(driver, lambda b: b.current_url.endswith(f"/tracks/{TRACKS[1][1]}.html"), "the track page opens")
    wait_for(driver, lambda b: b.execute_script("return document.readyState") == "complete", "track page loads")
    assert check_images(driver) == 1 + N_CARDS
    urls = audio_urls(driver)
    # the original, every card, and the players of "What the model says" (the features behind the top tags,
    # the same files as their cards)
    assert len(set(urls)) == 1 + N_CARDS and all(f"/auralised/{TRACKS[1][1]}/" in u for u in urls)
    tag_players = driver.find_elements(By.CSS_SELECTOR, ".contributors audio")
    assert 0 < len(tag_players) == len(urls) - 1 - N_CARDS
    assert "Top tags of this excerpt" in driver.find_element(By.ID, "tags-heading").find_element(
        By.XPATH, "..").text
    check_urls(sorted(set(urls)))
    state = make_playable(driver, index=urls.index(next(u for u in urls if u.endswith("/layer1/feature2.wav"))))
    assert state["src"].endswith("/layer1/feature2.wav") and abs(state["duration"] - SECONDS) < 0.01

    assert visible_cards(driver) == N_CARDS
    assert count_text(driver) == f"Showing {N_CARDS} of {N_CARDS} features"
    driver.find_element(By.CSS_SELECTOR, "input[name='layer'][value='1']").click()
    assert visible_cards(driver) == N_CARDS - N_FILTERS
    assert count_text(driver) == f"Showing {N_CARDS - N_FILTERS} of {N_CARDS} features"
    assert not driver.find_element(By.ID, "layer2").get_attribute("hidden")
    assert driver.find_element(By.ID, "layer1").get_attribute("hidden") is not None
    feature = driver.find_element(By.ID, "feature-filter")
    feature.send_keys("2")
    assert visible_cards(driver) == N_LAYERS - 1  # feature 2 of layers 2 and 3
    feature.send_keys("x")
    assert feature.get_attribute("aria-invalid") == "true"
    assert driver.find_element(By.ID, "feature-error").is_displayed()
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type='reset']").click()
    wait_for(driver, lambda b: visible_cards(b) == N_CARDS, "reset shows every card")

    # keyboard: the first Tab reaches the skip link; Space on a focused checkbox toggles a layer
    open_page(driver, driver.current_url)  # a fresh load: keyboard navigation starts at the top
    ActionChains(driver).send_keys(Keys.TAB).perform()
    assert driver.switch_to.active_element.get_attribute("class") == "skip-link"
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait_for(driver, lambda b: b.switch_to.active_element.get_attribute("id") == "main", "the skip link focuses main")
    driver.execute_script("document.querySelector(\"input[name='layer'][value='3']\").focus()")
    driver.switch_to.active_element.send_keys(Keys.SPACE)
    assert visible_cards(driver) == N_CARDS - N_FILTERS
    driver.switch_to.active_element.send_keys(Keys.SPACE)
    assert visible_cards(driver) == N_CARDS
    # ordering by strength puts the strongest first within each layer (the job records peaks, no activations)
    driver.find_element(By.CSS_SELECTOR, "select[name='order'] option[value='strength']").click()
    order = driver.execute_script(
        "return [...document.querySelectorAll('#layer1 [data-filter-item]')].map(e => e.dataset.strength)"
    )
    values = [float(v) for v in order if v]
    assert values == sorted(values, reverse=True) and len(values) == N_FILTERS
    driver.find_element(By.CSS_SELECTOR, "select[name='order'] option[value='feature']").click()
    full_page_screenshot(driver, ARTIFACTS / "report.png", tmp_path / "report.png")
    assert severe_console_entries(driver) == []

    # one feature across all tracks
    driver.find_element(By.CSS_SELECTOR, "#layer2-feature1 a.compare").click()
    wait_for(driver, lambda b: b.current_url.endswith("/features/layer2-feature1.html"), "the feature page opens")
    wait_for(driver, lambda b: b.execute_script("return document.readyState") == "complete", "feature page loads")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Feature 2-1 across tracks"
    assert check_images(driver) == 2 * len(TRACKS)
    urls = audio_urls(driver)
    assert len(urls) == 2 * len(TRACKS)
    check_urls(urls)
    make_playable(driver, index=1)
    full_page_screenshot(driver, ARTIFACTS / "report-feature.png", tmp_path / "report-feature.png")
    search = driver.find_element(By.ID, "track-filter")
    search.send_keys("rock")
    assert driver.execute_script(
        "return document.querySelectorAll('#compare-list [data-filter-item]:not([hidden])').length"
    ) == 1
    assert severe_console_entries(driver) == []
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_report_from_file_url(site: pathlib.Path, driver: WebDriver, tmp_path: pathlib.Path) -> None:
    # a copy in a folder with a space and a non-ASCII letter: file:// URLs must be quoted correctly too
    copy = tmp_path / "copied site ü"
    shutil.copytree(site / "auralised", copy / "auralised")
    driver.get_log("browser")
    open_page(driver, (copy / "auralised" / "report" / "index.html").as_uri())
    assert driver.execute_script("return document.documentElement.className") == "js"
    assert check_images(driver) == len(TRACKS) + 1
    driver.find_element(By.LINK_TEXT, TRACKS[0][0]).click()
    wait_for(driver, lambda b: b.current_url.endswith(f"/tracks/{TRACKS[0][1]}.html"), "the track page opens")
    wait_for(driver, lambda b: b.execute_script("return document.readyState") == "complete", "track page loads")
    assert check_images(driver) == 1 + N_CARDS
    make_playable(driver, index=0)
    for url in audio_urls(driver):
        assert url.startswith("file://")
        path = pathlib.Path(urllib.request.url2pathname(url[len("file://"):]))
        assert path.is_file(), url
    driver.find_element(By.CSS_SELECTOR, "input[name='layer'][value='2']").click()
    assert visible_cards(driver) == N_CARDS - N_FILTERS
    with contextlib.suppress(Exception):
        driver.get_screenshot_as_file(str(tmp_path / "report-file.png"))
    assert severe_console_entries(driver) == []
