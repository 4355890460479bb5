"""The gateway's own pages in a harness browser: navigate away from the harness page and wait."""

from __future__ import annotations

import json

from .browser import Browser
from .procs import HarnessError, wait_for


def open_page(browser: Browser, url: str, ready: str) -> None:
    """Navigate ``browser`` to ``url`` and wait until ``ready`` (a JS expression) is true."""
    browser.eval(f"(location.href = {json.dumps(url)}, true)")

    def loaded() -> bool:
        try:
            return bool(browser.eval(f"location.href === {json.dumps(url)} && document.readyState === 'complete' "
                                     f"&& !!({ready})"))
        except HarnessError:  # the old page's context went away under the evaluation
            return False

    wait_for(loaded, 20, f"{browser.name} to load {url}", interval=0.2)


LIVE_VIEW_READY = "window.rtc2sipLiveView && window.rtc2sipLiveView.updates > 0"
