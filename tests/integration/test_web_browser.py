"""The floor walk in a real browser: Debian's headless chromium on a 360 px phone viewport,
driven by Selenium through Debian's chromedriver (nothing is downloaded), against the real agent.

Screenshots of each page go to ``$AGENT_SCREENSHOTS`` (``docs/web`` regenerates the README's),
else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from support import AgentProcess, Broker, wait_until
from test_selftest import config, exit1
from websupport import WebClient, pair_link, web_config, web_status

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (scripts/setup installs them)")

PHONE = {"width": 360, "height": 760, "pixelRatio": 1.0}


@pytest.fixture
def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(arg)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    # The agent's certificate is self-signed; a phone's user accepts it after checking its
    # fingerprint (docs/web.md). The test checks the fingerprint itself (test_web.py).
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("AGENT_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_floor_walk_on_a_phone(tmp_path: Path, broker: Broker, agents: list, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    agent = AgentProcess(tmp_path / "a", web_config(config(tmp_path, broker, exit1(),
                                                           walk_within="20s")))
    agents.append(agent)
    agent.start(wait_connected=True)
    web_status(agent)
    out = shots(tmp_path)
    wait = WebDriverWait(browser, 20)

    def find(css: str):
        return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def text(css: str, contains: str):
        wait.until(lambda d: contains in d.find_element(By.CSS_SELECTOR, css).text,
                   f"{contains!r} in {css}")

    # Pair: the phone opens the link the QR code holds.
    browser.get(pair_link(agent, "operator"))
    text(".card.exit[data-exit=exit1]", "exit1")
    text(".card.device[data-device=exit1-eas]", "online")
    text("#health", "connected")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE["width"]
    assert "#pair=" not in browser.current_url  # the used code leaves the address bar
    browser.save_screenshot(str(out / "store.png"))

    # Live events, filtered by exit.
    browser.get(browser.current_url.split("#")[0] + "#events/exit1")
    find("#events")
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
    text("#events", "door.opened")
    assert agent.run_cli("sim", "gpio", "exit1-door", "close").returncode == 0
    text("#events", "door.closed")
    # A self-test started from another phone: its events show up marked TEST.
    other = WebClient(web_status(agent)["url"], tmp_path / "data" / "web" / "web.crt")
    assert other.pair(pair_link(agent, "operator")).status == 200
    list(other.stream(f"/api/runs/{other.post('/api/runs', {'exits': ['exit1']}).json()['id']}"
                      "/stream"))
    text('.event[data-type="eas.alarm"][data-test="true"]', "TEST")
    text('.event[data-type="door.closed"][data-test="false"]', "exit1-door")
    browser.save_screenshot(str(out / "events.png"))

    # Exit detail: a self-test streamed step by step.
    browser.get(browser.current_url.split("#")[0] + "#exit/exit1")
    find("#run-selftest").click()
    text("#steps", "alarm")
    find("#result")
    assert find(".step[data-step=alarm]").get_attribute("data-result") == "pass"
    browser.save_screenshot(str(out / "exit.png"))

    # The floor walk: the page says what to do, the pedestal (simulated) sees the tag.
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(tmp_path / "downloads")})
    browser.get(browser.current_url.split("#")[0] + "#walk")
    find("#start-walk").click()
    sims = {"LOW height": ("exit1-eas", "pulse"), "MIDDLE height": ("exit1-eas", "pulse"),
            "HIGH height": ("exit1-eas", "pulse"), "Open the exit door": ("exit1-door", "open"),
            "Close the exit door": ("exit1-door", "close")}
    for prompt, sim in sims.items():
        text("#prompt", prompt)
        if prompt == "MIDDLE height":
            browser.save_screenshot(str(out / "walk.png"))  # the first pass already on screen
        assert agent.run_cli("sim", "gpio", *sim).returncode == 0
    text("#prompt", "sounder")
    find("#prompt .answers button").click()  # "Yes"
    find("#downloads")
    for step in ("walk low", "walk middle", "walk high", "walk door opened", "walk door closed",
                 "walk sounder and lights"):
        assert find(f'.step[data-step="{step}"]').get_attribute("data-result") == "pass", step
    latency = find('.step[data-step="walk low"]').text
    assert " ms" in latency or " s" in latency
    text(".card[data-finished=exit1]", "pass")
    browser.save_screenshot(str(out / "walk-report.png"))

    find("#downloads a").click()  # "Download report (JSON)"
    report = wait_until(lambda: next((tmp_path / "downloads").glob("selftest-*.json"), None), 15,
                        "the downloaded report")
    data = json.loads(report.read_text())
    assert data["result"] == "pass" and data["walk"] is True and data["trigger"] == "web"
    kept = json.loads((tmp_path / "data" / "selftest" / "exit1.json").read_text())
    assert kept["run_id"] == data["run_id"]
