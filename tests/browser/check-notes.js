#!/usr/bin/env node
/* Opens pages of a built atlas in Chromium from file:// and reports whether any script ran:
   every hostile note used by tests/test_notes_browser.py increments window.__pwned, and an
   alert/confirm/prompt would open a dialog. Hovering and clicking every element of the
   notes triggers handlers that need a user (onmouseover, onclick, javascript: links).

   usage: node check-notes.js SITE_DIR PAGE...     (prints one JSON object) */
"use strict";

const path = require("path");
const { pathToFileURL } = require("url");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"];

(async () => {
  const [site, ...pages] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  const result = { dialogs: [], pwned: {}, notes: {} };
  try {
    for (const rel of pages) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on("dialog", async (dialog) => {
        result.dialogs.push(`${rel}: ${dialog.type()} ${dialog.message()}`);
        await dialog.dismiss();
      });
      await page.goto(pathToFileURL(path.join(site, rel)).href, { waitUntil: "load" });
      await page.waitForTimeout(300);
      for (const handle of await page.$$(".note-body *")) {
        await handle.hover({ timeout: 500, force: true }).catch(() => {});
        await handle.click({ timeout: 500, force: true, noWaitAfter: true }).catch(() => {});
        if (page.url() !== pathToFileURL(path.join(site, rel)).href) {
          await page.goBack().catch(() => {});  // a safe link was followed; come back
        }
      }
      await page.waitForTimeout(300);
      result.pwned[rel] = await page.evaluate(() => window.__pwned || 0).catch(() => -1);
      result.notes[rel] = await page.evaluate(() => {
        const body = document.querySelector(".note-body");
        return body ? body.innerText : null;
      });
      await context.close();
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((error) => {
  console.error(error);
  process.exit(2);
});
