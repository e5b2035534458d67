"""What people see, in a real browser: Label Studio's labeling UI and the HTML report.

Headless Debian ``chromium`` driven by Playwright (``make browser`` installs both; no browser
download). Screenshots are kept in ``test-artifacts/`` for people to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.inference.tagger import Entity
from training.labelstudio.client import push_predictions, push_project, push_tasks
from training.schema import labeling_config_xml

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium as root, with no outbound connections of its own (this network refuses them).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Texts where offsets go wrong: an emoji, a flag (two code points), a ZWJ sequence (five),
# CRLF line ends, curly quotes, "U.S." and "Jr.".
CASES = {
    "emoji": ("Hello 😀 Secretary General Lars Løkke met officials.", ["Secretary General", "Lars Løkke"]),
    "flag": ("Ties with 🇯🇵 Japan and 🇵🇬 Papua New Guinea grew.", ["Japan", "Papua New Guinea"]),
    "zwj": ("Rescuers 👨🏻‍🚒 from Tokyo and 👩‍👩‍👧 Osaka helped.", ["Tokyo", "Osaka"]),
    "crlf": (
        "KUALA LUMPUR, May 2 —\r\nThe U.S. and Malaysia met.\r\nGilberto Teodoro Jr. spoke.",
        ["KUALA LUMPUR", "May 2", "U.S.", "Malaysia", "Gilberto Teodoro Jr."],
    ),
    "quotes": (
        "The “Pukpuk Treaty” was signed in ‘Port Moresby’ on Monday.",
        ["Pukpuk Treaty", "Port Moresby", "Monday"],
    ),
}
LABELS = {
    "Secretary General": "ROLE", "Lars Løkke": "PERSON", "Gilberto Teodoro Jr.": "PERSON",
    "Pukpuk Treaty": "AGREEMENT", "May 2": "DATE", "Monday": "DATE",
}  # fmt: skip


class GoldTagger:
    """Answers with the known entities of each text: the browser test checks where Label Studio
    draws them, so the predictions must be exactly right."""

    def tag_with_confidence(self, texts):
        out = []
        for text in texts:
            entities = next((surfaces for t, surfaces in CASES.values() if t == text), [])
            found = []
            for surface in entities:
                start = text.index(surface)
                label = LABELS.get(surface, "GPE")
                found.append(Entity(label, start, start + len(surface), surface, 0.9))
            out.append((found, 0.5))
        return out


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def logged_in(browser, label_studio):
    """A browser page logged in to the test server as its local user."""
    from training.labelstudio import server as labelstudio_server

    credentials = labelstudio_server.local_credentials(label_studio.state.data_dir)
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    page.goto(f"{label_studio.url}/user/login/")
    page.fill("input[name=email]", credentials.username)
    page.fill("input[name=password]", credentials.password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/user/login" not in page.url, "logged in"
    yield page
    page.close()


@pytest.fixture(scope="module")
def browser_project(label_studio):
    project = push_project(label_studio.connection, "browser test", labeling_config_xml()).id
    tasks = [{"data": {"text": text, "doc_id": name}} for name, (text, _) in CASES.items()]
    tasks.append({"data": {"text": "Officials from 🇵🇬 Papua New Guinea met in Port Moresby on Monday.",
                           "doc_id": "by-hand"}})  # fmt: skip
    ids = push_tasks(label_studio.connection, project, tasks).task_ids
    task_ids = dict(zip([t["data"]["doc_id"] for t in tasks], ids))
    by_hand = task_ids.pop("by-hand")
    # Predict only the CASES tasks: annotate the hand one first so that it is not "unannotated".
    push_predictions(label_studio.connection, project, GoldTagger(), "gold-v1", order_by_uncertainty=False)
    return project, task_ids, by_hand


def open_task(page, url: str, project: int, task: int) -> None:
    page.goto(f"{url}/projects/{project}/data?task={task}")
    page.wait_for_selector(".lsf-richtext__line", timeout=60_000)
    page.wait_for_timeout(500)


def highlighted_regions(page) -> list[tuple[str, str]]:
    """``(label, text)`` of every highlighted region in the labeling view, as the DOM draws it."""
    regions: dict[str, list] = {}
    for span in page.query_selector_all("span.htx-highlight"):
        index, _, label = (span.get_attribute("data-label") or ":").partition(":")
        regions.setdefault(index, [label, ""])[1] += span.text_content() or ""
    return [(label, text) for label, text in regions.values()]


@pytest.mark.parametrize("case", list(CASES))
def test_pre_annotations_are_drawn_on_their_text(case, logged_in, label_studio, browser_project):
    project, task_ids, _ = browser_project
    open_task(logged_in, label_studio.url, project, task_ids[case])
    logged_in.screenshot(path=str(ARTIFACTS / f"label-studio-prediction-{case}.png"))
    text, surfaces = CASES[case]
    drawn = highlighted_regions(logged_in)
    assert sorted(drawn) == sorted((LABELS.get(s, "GPE"), s) for s in surfaces), text


def test_a_span_selected_with_the_mouse_and_a_hotkey_reaches_the_dataset(
    logged_in, label_studio, browser_project, tmp_path
):
    from training.config import DataConfig
    from training.data.dataset import build_dataset
    from training.data.export import ConversionReport, convert_tasks
    from training.labelstudio.client import pull
    from training.schema import BIO_TAGS

    project, _, by_hand = browser_project
    page = logged_in
    open_task(page, label_studio.url, project, by_hand)
    target = "Port Moresby"
    box = page.evaluate(
        """(target) => {
          const root = document.querySelector('.lsf-richtext');
          const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
          for (let node; (node = walker.nextNode()); ) {
            const i = node.textContent.indexOf(target);
            if (i < 0) continue;
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + target.length);
            const rects = range.getClientRects(), a = rects[0], b = rects[rects.length - 1];
            return {x1: a.left + 1, y1: a.top + a.height / 2, x2: b.right - 1, y2: b.top + b.height / 2};
          }
          return null;
        }""",
        target,
    )
    assert box, f"{target!r} is on the page"
    page.keyboard.press("3")  # GPE's hotkey (the third label of the generated config)
    page.mouse.move(box["x1"], box["y1"])
    page.mouse.down()
    page.mouse.move(box["x2"], box["y2"], steps=8)
    page.mouse.up()
    assert highlighted_regions(page) == [("GPE", target)]
    page.screenshot(path=str(ARTIFACTS / "label-studio-annotated-by-hand.png"))
    page.click("button:has-text('Submit')")
    page.wait_for_timeout(1500)

    snapshot = pull(label_studio.connection, project, tmp_path / "snapshots")
    import json

    tasks = json.loads(Path(snapshot.export_path).read_text(encoding="utf-8"))
    documents, _ = convert_tasks(tasks, DataConfig(source=snapshot.export_path))
    (document,) = [d for d in documents if d.id == "by-hand"]
    assert [(document.text[s.start : s.end], s.label) for s in document.spans] == [(target, "GPE")]
    row = build_dataset([document], DataConfig(), ConversionReport())["train"][0]
    tagged = [(word, BIO_TAGS[tag]) for word, tag in zip(row["tokens"], row["ner_tags"]) if tag]
    assert tagged == [("Port", "B-GPE"), ("Moresby", "I-GPE")]


def test_the_report_renders_with_no_console_error(browser, tmp_path):
    from test_report import TRAINING_LOG, hostile_evaluation

    from training.evaluation.report import ReportModel, write_report

    evaluation = hostile_evaluation()
    scores = evaluation.scores(bootstrap=50)
    model = ReportModel("models/sample", scores, evaluation.error_records(), TRAINING_LOG)
    page_path = write_report(tmp_path / "report", [model], payload=scores)
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(Path(page_path).resolve().as_uri())
    page.wait_for_load_state("load")
    widths = page.evaluate("Array.from(document.images, image => image.naturalWidth)")
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.close()
    assert errors == []
    assert widths and all(width > 0 for width in widths), widths
