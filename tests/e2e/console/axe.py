"""Deque's axe-core (npm `axe-core`, fetched at a pinned version by scripts/tools.sh) run inside a
console page: the WCAG 2.2 AA rules an outside checker holds the console to."""

from __future__ import annotations

import functools
from pathlib import Path

from playwright.sync_api import Page

from tests.k8s import tools

WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# Each violation and the elements it was found on, as plain data: an axe result holds DOM nodes.
RUN = """tags => axe.run(document, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] })
  .then((results) => results.violations.map((violation) => ({
    id: violation.id, impact: violation.impact, help: violation.help,
    nodes: violation.nodes.map((node) => ({ target: node.target.join(" "), html: node.html })) })))"""


@functools.cache
def axe_script() -> Path:
    """axe's browser bundle in the tools cache (`make tools` fetches it; no node or npm needed)."""
    found = tools() / "axe.min.js"
    assert found.is_file(), "scripts/tools.sh did not fetch axe-core: run `make tools`"
    return found


def axe_violations(page: Page, state: str) -> list[str]:
    """Each WCAG A/AA violation axe finds on the page as shown now: the state, the rule, its
    impact and the element. The page's context must bypass its CSP (axe is an inline script)."""
    # Routes change the hash only: the document, and the axe already added to it, stay.
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=axe_script())
    found = page.evaluate(RUN, WCAG_AA)
    return [f"{state}: {violation['id']} ({violation['impact']}) {violation['help']}: "
            f"{node['target']} {node['html'][:160]}"
            for violation in found for node in violation["nodes"]]
