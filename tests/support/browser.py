"""Headless Chromium driving JupyterLab, as a user's browser would through the tunnel.

Debian's ``chromium`` and ``chromium-driver`` (installed by .ci/setup) with selenium. The
driver and browser paths are given explicitly so selenium never looks for (or downloads) a
driver of its own; the flags keep Chromium off every network but the tunnel's loopback.

Every wait is on page state (an element, a text), never on time: JupyterLab builds its page
in stages, and a screenshot or a keystroke before a stage has settled is what makes browser
tests flaky.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
#: JupyterLab's first load compiles a lot of JavaScript: generous under a loaded CI machine.
WAIT_S = 180.0

NOTEBOOK_CARD = '.jp-LauncherCard[data-category="Notebook"]'
ACTIVE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
CELL_EDITORS = f"{ACTIVE_NOTEBOOK} .jp-Cell .cm-content"
OUTPUTS = f"{ACTIVE_NOTEBOOK} .jp-OutputArea-output"


def available() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (.ci/setup installs chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extras have it)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a new, empty profile, quit and removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="orchestrate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, condition: Any, what: str) -> Any:
    """Wait for a page state; a timeout names the state and shows the page's title."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(condition)
    except TimeoutException as exc:
        raise AssertionError(
            f"JupyterLab never showed {what} (page title {driver.title!r})"
        ) from exc


def new_notebook(driver: Any) -> None:
    """Click the Launcher's notebook card and wait for the new notebook's first cell."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    card = wait_for(
        driver, ec.element_to_be_clickable((By.CSS_SELECTOR, NOTEBOOK_CARD)), "the Launcher"
    )
    card.click()
    wait_for(driver, ec.presence_of_element_located((By.CSS_SELECTOR, CELL_EDITORS)), "a cell")


def run_in_last_cell(driver: Any, code: str) -> None:
    """Replace the last cell's text with `code` and run it (Shift+Enter, as a user does).

    JupyterLab queues a run asked for before the kernel is ready, so no kernel wait here.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    editor = driver.find_elements(By.CSS_SELECTOR, CELL_EDITORS)[-1]
    editor.click()
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(code)
    # On a loaded machine the editor can still be settling and drop keys: run only once the
    # cell holds exactly the code (a page state, not a pause).
    wait_for(driver, lambda drv: editor.text.strip() == code, f"the cell to read {code!r}")
    editor.send_keys(Keys.SHIFT, Keys.ENTER)


def wait_for_output(driver: Any, text: str) -> None:
    """Wait until some output area of the open notebook shows `text` as a whole line."""
    from selenium.webdriver.common.by import By

    def shown(drv: Any) -> bool:
        for output in drv.find_elements(By.CSS_SELECTOR, OUTPUTS):
            if text in output.text.splitlines():
                return True
        return False

    wait_for(driver, shown, f"the output {text!r}")


def save(driver: Any) -> None:
    """Ctrl+S in the notebook, then wait until the tab no longer shows unsaved changes."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    wait_for(
        driver,
        lambda drv: not drv.find_elements(By.CSS_SELECTOR, ".jp-mod-dirty"),
        "the notebook saved",
    )
