import { css } from "lit";

/** What every card shares: the surface, badges, 44 px touch targets, visible focus. */
export const cardStyles = css`
  :host { display: block; }
  .card {
    background: var(--tb-card); color: var(--tb-text); border: 1px solid var(--tb-border);
    border-radius: 12px; padding: 14px 16px; display: grid; gap: 10px; align-content: start; height: 100%; box-sizing: border-box;
  }
  .card.offline { opacity: 0.75; }
  header { display: flex; align-items: baseline; justify-content: space-between; gap: 8px; }
  h4 { margin: 0; font-size: 1rem; font-weight: 600; overflow-wrap: anywhere; }
  .muted { color: var(--tb-muted); font-size: 0.85rem; }
  .badge {
    font-size: 0.75rem; border: 1px solid currentColor; border-radius: 999px; padding: 1px 8px; white-space: nowrap;
  }
  .badge.online { color: var(--tb-ok); }
  .badge.offline { color: var(--tb-error); }
  .badge.unknown { color: var(--tb-muted); }
  button, select, input {
    font: inherit; color: var(--tb-text); background: var(--tb-card); border: 1px solid var(--tb-border);
    border-radius: 8px; min-height: 44px; min-width: 44px; padding: 0 10px; box-sizing: border-box;
  }
  button { cursor: pointer; }
  button:disabled, select:disabled { opacity: 0.5; cursor: not-allowed; }
  button:focus-visible, select:focus-visible, input:focus-visible, summary:focus-visible {
    outline: 3px solid var(--tb-primary); outline-offset: 2px;
  }
  .primary { background: var(--tb-primary); color: var(--tb-on-primary); border-color: var(--tb-primary); }
  .readings { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0; }
  .readings div { display: grid; }
  .readings dt { color: var(--tb-muted); font-size: 0.8rem; }
  .readings dd { margin: 0; font-variant-numeric: tabular-nums; }
  .visually-hidden {
    position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap;
  }
`;

/**
 * A device card's host: off-screen cards skip layout and paint (they stay in the accessibility
 * tree and in find-in-page), so a state change costs the cards in view, not a hundred.
 */
export const deviceCardHost = css`
  :host { content-visibility: auto; contain-intrinsic-size: auto 240px; }
`;
