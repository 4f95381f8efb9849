// The classic script (`<script src=".../sdk/v1/produktly-segment.js">`)
// defines `window.Produktly`. Reference this file to type it:
//   /// <reference types="@produktly/segment-browser/global" />
import type { createTracker } from "./index.js";

declare global {
  interface Window {
    Produktly: { createTracker: typeof createTracker };
  }
  // eslint-disable-next-line no-var
  var Produktly: { createTracker: typeof createTracker };
}

export {};
