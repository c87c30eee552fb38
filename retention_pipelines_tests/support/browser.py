"""The Dagster UI in a real headless Chromium (Debian's, with its chromedriver: nothing is downloaded)."""

from __future__ import annotations

import time
from pathlib import Path

NUX_TITLE = "Join the Dagster community"  # the first-visit dialog's title, shown on a loopback origin unless disabled


def chromium():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"  # Debian's chromium; nothing is downloaded
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1100"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)


def page(driver, url: str, expected: list[str], screenshot: Path, seconds: float = 90) -> str:
    """Open `url`, wait until the page shows every expected text, save a screenshot; the page text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    try:
        WebDriverWait(driver, seconds, poll_frequency=1).until(
            lambda d: all(text in d.find_element(By.TAG_NAME, "body").text for text in expected))
    except TimeoutException:
        driver.save_screenshot(str(screenshot.with_name(screenshot.stem + "-timeout.png")))
        shown = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{url} never showed {expected}; it showed:\n{shown[:3000]}") from None
    # The first visit greets with a "Join the Dagster community" dialog: skipped once, it stays away.
    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        button.click()
    time.sleep(1)  # the last requests settle before the picture
    assert not driver.find_elements(By.XPATH, "//*[normalize-space()='" + NUX_TITLE + "']"), url
    driver.save_screenshot(str(screenshot))
    return driver.find_element(By.TAG_NAME, "body").text
