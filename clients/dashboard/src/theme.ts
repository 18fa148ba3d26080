/**
 * Colours as CSS custom properties on the page's root: light and dark from
 * prefers-color-scheme (Home Assistant's own default follows it too), and under ingress the
 * theme Home Assistant applied to its own document. The ingress iframe is same-origin with
 * Home Assistant's frontend, which sets its theme's variables on its <html>; no variable is
 * inherited into an iframe, so the page reads them from the parent and follows its changes.
 */
const PAGE = `
:root {
  color-scheme: light;
  --tb-bg: #f3f4f6; --tb-card: #ffffff; --tb-text: #1b1d21; --tb-muted: #4d535b;
  --tb-border: #c9ced6; --tb-primary: #0a5fae; --tb-on-primary: #ffffff;
  --tb-error: #a8231b; --tb-ok: #1a6a2a; --tb-warn: #7a4a00; --tb-pending: #5b3fa6;
  --tb-series-1: #d1495b; --tb-series-2: #2e86ab; --tb-series-3: #6a994e;
  --tb-font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
@media (prefers-color-scheme: dark) {
  :root {
    color-scheme: dark;
    --tb-bg: #111316; --tb-card: #1d2024; --tb-text: #e8eaed; --tb-muted: #b0b6be;
    --tb-border: #3d434a; --tb-primary: #74b6ff; --tb-on-primary: #07182b;
    --tb-error: #ff8f86; --tb-ok: #7fd68f; --tb-warn: #f2c16b; --tb-pending: #c6acff;
    --tb-series-1: #ff8a96; --tb-series-2: #7cc6ef; --tb-series-3: #a9d98a;
  }
}
html, body { margin: 0; background: var(--tb-bg); color: var(--tb-text); font-family: var(--tb-font); }
`;

/** Home Assistant's theme variable → ours. */
const FROM_HA: readonly (readonly [string, string])[] = [
  ["--primary-background-color", "--tb-bg"],
  ["--card-background-color", "--tb-card"],
  ["--primary-text-color", "--tb-text"],
  ["--secondary-text-color", "--tb-muted"],
  ["--divider-color", "--tb-border"],
  ["--primary-color", "--tb-primary"],
  ["--text-primary-color", "--tb-on-primary"],
  ["--error-color", "--tb-error"],
  ["--success-color", "--tb-ok"],
  ["--warning-color", "--tb-warn"],
];

export function applyPageStyles(): void {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(PAGE);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}

/** Follow Home Assistant's theme when framed by it; returns whether a theme was found. */
export function followHomeAssistantTheme(): boolean {
  let parentRoot: HTMLElement;
  try {
    if (window.parent === window) return false;
    parentRoot = window.parent.document.documentElement; // throws when not same-origin
  } catch {
    return false;
  }
  const apply = (): boolean => {
    const computed = window.parent.getComputedStyle(parentRoot);
    const root = document.documentElement;
    let found = false;
    for (const [ha, ours] of FROM_HA) {
      const value = computed.getPropertyValue(ha).trim();
      if (value) {
        root.style.setProperty(ours, value);
        found = true;
      } else root.style.removeProperty(ours);
    }
    const scheme = computed.getPropertyValue("color-scheme").trim();
    if (scheme === "dark" || scheme === "light") root.style.setProperty("color-scheme", scheme);
    return found;
  };
  const found = apply();
  new MutationObserver(() => apply()).observe(parentRoot, { attributes: true, attributeFilter: ["style", "class"] });
  window.parent.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => apply());
  return found;
}
