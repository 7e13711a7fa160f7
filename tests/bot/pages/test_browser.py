"""A real browser (Debian's headless Chromium, driven by Playwright) watches a live run page.

Set SKYRUN_SCREENSHOTS=DIR to keep the screenshots of a finished run and of the runs list there;
the README's pictures come from
`SKYRUN_SCREENSHOTS=docs .venv/bin/pytest tests/bot/pages/test_browser.py`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, ViewportSize, async_playwright
from temporalio.client import Client

from tests.bot.pages.helpers import bot_stack, gated_files, github_request, served
from tests.runs import request_for, wait_finished, wait_stage_running
from worker.contract import RunState
from worker.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=390, height=844)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_live_run_page_shows_the_stage_finish_without_a_reload(
    gate: Path,
    browser: Browser,
    client: Client,
    settings: Settings,
    git_repo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    async with bot_stack(client, settings) as stack, served(stack.app) as base:
        outcome = await stack.control.start(request_for(git_repo(gated_files(gate))))
        try:
            await wait_stage_running(stack.control, outcome.run_id, "train")
            page = await browser.new_page(viewport=DESKTOP)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            await page.goto(f"{base}/runs/{outcome.run_id}")
            train = page.locator('[data-stage="train"]')
            assert await train.get_attribute("data-state") == "running"
            await page.wait_for_function(
                "document.querySelector('[data-stage=train] pre.log')"
                "?.textContent.includes('epoch 1')"
            )
            # Anything the page keeps in its window survives only if it is never reloaded.
            await page.evaluate("window.__sameDocument = true")
            gate.touch()
            await page.wait_for_selector(
                '[data-stage="train"][data-state="succeeded"]', timeout=60_000
            )
            await page.wait_for_selector('article.run[data-live="0"]', timeout=30_000)
            assert await page.evaluate("window.__sameDocument") is True
            assert await page.locator('[data-role="run-state"]').text_content() == "succeeded"
            assert (await page.title()).startswith("succeeded")
            assert "75%" in await page.locator(".markdown table").inner_text()
            assert errors == []
        finally:
            gate.touch()
        progress = await wait_finished(stack.control, outcome.run_id)
        assert progress.state is RunState.SUCCEEDED


async def test_screenshots_of_a_finished_run_on_a_desktop_and_a_phone(
    browser: Browser,
    client: Client,
    settings: Settings,
    git_repo: Callable[..., Path],
    example_files: dict[str, str],
    tmp_path: Path,
) -> None:
    target = Path(os.environ.get("SKYRUN_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    repo = git_repo(example_files)
    async with bot_stack(client, settings) as stack, served(stack.app) as base:
        earlier = await stack.control.start(github_request(repo, envs={"NUM_EPOCHS": "2"}))
        await wait_finished(stack.control, earlier.run_id)
        outcome = await stack.control.start(github_request(repo))
        assert (await wait_finished(stack.control, outcome.run_id)).state is RunState.SUCCEEDED

        shots = {
            "run-page.png": (f"/runs/{outcome.run_id}", DESKTOP),
            "run-page-phone.png": (f"/runs/{outcome.run_id}", PHONE),
            "runs-page.png": ("/runs", DESKTOP),
        }
        for name, (path, viewport) in shots.items():
            page = await browser.new_page(viewport=viewport, device_scale_factor=1)
            await page.emulate_media(color_scheme="light")
            await page.goto(base + path)
            await page.wait_for_selector("main")
            # Nothing may stick out sideways, on a phone least of all.
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name}: page is {overflow}px wider than the screen"
            await page.screenshot(path=str(target / name), full_page=True)
            await page.close()
    for name in shots:
        assert (target / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
