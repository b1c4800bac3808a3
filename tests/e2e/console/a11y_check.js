// A small accessibility check run inside the page: WCAG AA text contrast, accessible names of
// controls, the page language and one h1. Returns the problems found (an empty list passes).
() => {
  const problems = [];
  const rgba = (css) => {
    const parts = css.match(/[\d.]+/g).map(Number);
    return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
  };
  const luminance = ({ r, g, b }) => {
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  // The first opaque background behind an element (the console uses no translucent ones).
  const backgroundOf = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = rgba(getComputedStyle(node).backgroundColor);
      if (colour.a > 0) return colour;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  for (const element of document.querySelectorAll("body *")) {
    const ownText = [...element.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.data.trim());
    if (!ownText || !element.checkVisibility() || element.closest("[hidden]")) continue;
    const style = getComputedStyle(element);
    const [light, dark] = [luminance(rgba(style.color)), luminance(backgroundOf(element))].sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)}:1 for "${element.textContent.trim().slice(0, 40)}"`);
    }
  }
  const controls = "input, select, textarea, button, progress, a[href], summary";
  for (const control of document.querySelectorAll(controls)) {
    if (!control.checkVisibility()) continue;
    const labelled = control.getAttribute("aria-labelledby");
    const name = control.getAttribute("aria-label")
      || (control.labels && control.labels.length ? [...control.labels].map((l) => l.textContent).join(" ") : "")
      || (labelled ? labelled.split(" ").map((id) => document.getElementById(id)?.textContent ?? "").join(" ") : "")
      || (["INPUT", "SELECT", "TEXTAREA", "PROGRESS"].includes(control.tagName) ? "" : control.textContent);
    if (!name.trim()) problems.push(`no accessible name: ${control.outerHTML.slice(0, 80)}`);
  }
  if (!document.documentElement.lang) problems.push("the page has no lang attribute");
  if (document.querySelectorAll("h1").length !== 1) problems.push("the page has not exactly one h1");
  return problems;
}
