"""The page in a real browser: headless Chromium (Debian's chromium + chromium-driver) under selenium.

A real eegmat recording is replayed as a live LSL stream into the pipeline, which plays to a JACK MIDI
port. The page must show values that move while it plays; clicking an instrument's mute button must
end its notes on the port; a command the service refuses must show the service's own sentence; the
phone layout must fit a phone's width; a read-only page shows no controls. Screenshots are kept in the
pytest tmp folder ``web-screenshots*`` (the README's ``docs/web.png`` is one of them).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.sources.player import Replay
from brainharmonic_rt.web.server import WebSurface

from .midiutil import note_offs, note_ons
from .webutil import CHROMEDRIVER, CHROMIUM, chromium, live, settings, until

pytestmark = [pytest.mark.usefixtures("jack_server"), pytest.mark.slow]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed; run `sudo scripts/install-system-deps.sh`.")
    return tmp_path_factory.mktemp("web-screenshots")


def _text(driver: Any, testid: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text)


async def _wait_page(driver: Any, pred: Any, timeout: float, what: str) -> Any:
    """Poll the page (selenium calls block: off the event loop) until ``pred(driver)`` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(pred, driver)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} within {timeout} s")
        await asyncio.sleep(0.2)


def _full_page(driver: Any, path: Path, width: int) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, int(height) + 140)
    time.sleep(0.5)  # one animation frame at the new size
    driver.save_screenshot(str(path))


async def test_page_follows_a_replayed_recording_and_steers_it(
    eegmat_dir: Path, source_id: str, shots: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    port = f"bh-page-{uuid.uuid4().hex[:6]}"
    s = settings(source_id, port, signal={"window": 2.0, "baseline": 4.0})
    async with (
        Replay(eegmat_dir / "Subject00_2.edf", name="bh-page-eeg", source_id=source_id) as _,
        live(s, synthetic=False) as rig,
    ):
        assert rig.reader is not None
        with chromium(tmp_path / "profile") as driver:
            await asyncio.to_thread(driver.get, rig.url + "/")
            await _wait_page(driver, lambda d: _text(d, "link") == "live", 30, "a live connection")
            await _wait_page(driver, lambda d: _text(d, "window").startswith("window"), 20, "a brain window")
            first = await asyncio.to_thread(_text, driver, "window")
            beat0 = await asyncio.to_thread(_text, driver, "beat")
            await _wait_page(driver, lambda d: _text(d, "window") != first, 10, "the next brain window")
            await _wait_page(driver, lambda d: _text(d, "beat") != beat0, 10, "the beat moving")
            assert (await asyncio.to_thread(_text, driver, "stream")).startswith("bh-page-eeg · 19 ch @ 500 Hz")
            assert await asyncio.to_thread(_text, driver, "chord") not in ("", "–")
            assert (await asyncio.to_thread(_text, driver, "tempo")) == "120.0"
            zs = await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, '[data-testid^="z-frontal-"]')
            assert len(zs) == 3 and all(z.text not in ("", "–") for z in zs)
            dots = await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, "#scalp circle.ch")
            assert len(dots) == 19
            await _wait_page(driver, lambda d: _text(d, "calibration") == "done", 20, "calibration done")
            await asyncio.to_thread(_full_page, driver, shots / "page-live.png", 1400)

            # mute the harmony pad (sustained chords: usually sounding) from its button
            name = "central"
            channel = rig.pipe.engine.composer.instruments[name].channel  # type: ignore[union-attr]
            await until(
                lambda: any(m[0] & 15 == channel for _, m in note_ons(rig.reader.snapshot())),  # type: ignore[union-attr]
                20,
                f"a note of {name}",
            )
            button = await asyncio.to_thread(driver.find_element, By.CSS_SELECTOR, f'[data-testid="mute-{name}"]')
            clicked = time.monotonic()
            await asyncio.to_thread(button.click)
            await _wait_page(driver, lambda d: _text(d, f"mute-{name}") == "muted", 5, "the mute taking effect")
            ended = [
                t
                for t, m in rig.reader.snapshot()
                if t >= clicked and m[0] & 15 == channel and (note_offs([(t, m)]) or m[:2] == [0xB0 | channel, 123])
            ]
            assert ended, f"the mute click produced no note-off or all-notes-off on channel {channel}"
            assert ended[0] - clicked < 2.0
            await asyncio.sleep(1.5)
            later = [m for t, m in note_ons(rig.reader.snapshot()) if t > ended[0] + 0.05 and m[0] & 15 == channel]
            assert not later, f"{name} played on after the mute: {later[:3]}"
            assert rig.pipe.engine.composer.muted == [name]  # type: ignore[union-attr]

            # a bad command: its error sentence, as the service words it
            field = await asyncio.to_thread(driver.find_element, By.CSS_SELECTOR, '[data-testid="in-tempo"]')
            await asyncio.to_thread(field.clear)
            await asyncio.to_thread(field.send_keys, "500")
            submit = await asyncio.to_thread(driver.find_element, By.CSS_SELECTOR, '[data-testid="set-tempo"]')
            await asyncio.to_thread(submit.click)
            expected = "Command field 'bpm' should be less than or equal to 300 (got 500)."
            await _wait_page(driver, lambda d: _text(d, "message") == expected, 5, "the error sentence")
            message = await asyncio.to_thread(driver.find_element, By.CSS_SELECTOR, '[data-testid="message"]')
            assert "error" in (message.get_attribute("class") or "")
            assert rig.pipe.engine.composer.tempo == 120.0  # type: ignore[union-attr]
            await asyncio.to_thread(_full_page, driver, shots / "page-error.png", 1400)

            # a good one from the same form
            await asyncio.to_thread(field.clear)
            await asyncio.to_thread(field.send_keys, "90")
            await asyncio.to_thread(submit.click)
            await _wait_page(driver, lambda d: _text(d, "tempo") == "90.0", 5, "the new tempo")

            # a phone: one column, nothing wider than the screen
            await asyncio.to_thread(driver.set_window_size, 412, 915)
            await asyncio.sleep(1.0)
            overflow = await asyncio.to_thread(
                driver.execute_script, "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"the phone layout is {overflow} px wider than the screen"
            await asyncio.to_thread(_full_page, driver, shots / "page-phone.png", 412)

        # the same run, read-only, on a second surface: no controls
        ro = load_settings(None, web={"enabled": True, "port": 0, "readonly": True})
        async with WebSurface(rig.pipe, ro.web, handler=rig.web.handler) as view:
            with chromium(tmp_path / "profile-ro") as driver:
                await asyncio.to_thread(driver.get, f"http://127.0.0.1:{view.port}/")
                await _wait_page(driver, lambda d: _text(d, "link") == "live", 30, "a live connection")
                await _wait_page(driver, lambda d: _text(d, "window").startswith("window"), 20, "a brain window")
                panic = await asyncio.to_thread(driver.find_element, By.CSS_SELECTOR, '[data-testid="panic"]')
                mute = await asyncio.to_thread(driver.find_element, By.CSS_SELECTOR, f'[data-testid="mute-{name}"]')
                assert not panic.is_displayed() and not mute.is_displayed()
                await asyncio.to_thread(_full_page, driver, shots / "page-readonly.png", 1400)
    for png in shots.glob("*.png"):
        assert png.stat().st_size > 20_000, png
    print(f"screenshots in {shots}")
    if (target := _readme_shot()) is not None:
        shutil.copy(shots / "page-live.png", target)


def _readme_shot() -> Path | None:
    """``BH_README_SHOT=path`` copies the live screenshot there (how docs/web.png was made)."""
    import os

    value = os.environ.get("BH_README_SHOT")
    return Path(value) if value else None
