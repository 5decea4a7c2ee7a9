#!/usr/bin/env node
/* The layer page's branch sub-navigation and filters, and the atlas-wide search, in Chromium from
   file://. Prints one JSON object of what it saw, for tests/test_search_browser.py to judge; saves
   screenshots when an artifacts folder is given.

   usage: node check-branches-search.js SITE_DIR [ARTIFACTS_DIR] */
"use strict";

const path = require("path");
const { pathToFileURL } = require("url");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"];

const visible = (page) => page.$$eval("#unit-grid .unit-card", (cards) =>
  cards.filter((c) => !c.hidden).map((c) => parseInt(c.dataset.channel, 10)));

(async () => {
  const [site, artifacts] = process.argv.slice(2);
  const url = (rel) => pathToFileURL(path.join(site, rel)).href;
  const shot = async (page, name) => { if (artifacts) await page.screenshot({ path: path.join(artifacts, name), fullPage: true }); };
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  const out = { errors: [], dialogs: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on("pageerror", (e) => out.errors.push(e.message));
    page.on("console", (m) => { if (m.type() === "error") out.errors.push(m.text()); });
    page.on("dialog", async (d) => { out.dialogs.push(d.message()); await d.dismiss(); });

    // Branch sub-navigation on the layer page.
    await page.goto(url("demo/conv2/index.html"), { waitUntil: "load" });
    out.branches = await page.$$eval(".branch-list li", (items) => items.map((li) => li.innerText.replace(/\s+/g, " ").trim()));
    out.initial = await visible(page);
    await page.click(".branch-list a >> text=3x3");
    out.afterBranchClick = await visible(page);
    out.current = await page.$$eval(".branch-list a[aria-current]", (links) => links.map((a) => a.querySelector(".branch-label").textContent));
    out.filterText = await page.inputValue("#channel-filter");
    await shot(page, "layer-branch.png");
    await page.goto(url("demo/conv2/index.html") + "#branch-branch3", { waitUntil: "load" });
    await page.reload({ waitUntil: "load" }); /* a fresh load with the hash, as when arriving from a unit page */
    out.fromHash = await visible(page);

    // Filters: dead only, co-activation with a channel.
    await page.goto(url("demo/conv2/index.html"), { waitUntil: "load" });
    await page.selectOption("#show-only", "dead");
    out.deadOnly = await visible(page);
    await page.selectOption("#show-only", "all");
    await page.fill("#similar-to", "5");
    out.coactive = await visible(page);
    out.coactiveOrder = await page.$$eval("#unit-grid .unit-card", (cards) => cards.filter((c) => !c.hidden).map((c) => parseInt(c.dataset.channel, 10)));
    out.coactiveStatus = await page.textContent("#filter-status");
    await page.fill("#similar-to", "");
    out.cleared = await visible(page);

    // The unit page: both numbers.
    await page.goto(url("demo/conv2/5/index.html"), { waitUntil: "load" });
    out.unitBranch = (await page.innerText(".facts")).replace(/\s+/g, " ");
    await shot(page, "unit-branch.png");

    // Search from a unit page two folders down: by layer and number, by branch number, by note text.
    const search = async (query) => {
      await page.fill("#site-search-input", query);
      await page.waitForFunction((q) => document.getElementById("site-search-results").dataset.query === q, query);
      return page.$$eval("#site-search-results li", (items) => items.map((li) => ({
        title: li.querySelector(".search-title").textContent,
        detail: (li.querySelector(".search-detail") || {}).textContent || "",
        href: li.querySelector("a").getAttribute("href"),
        images: li.querySelectorAll("img").length,
      })));
    };
    out.byNumber = await search("conv2 7");
    out.byBranch = await search("conv2 3x3 2");
    out.byNote = await search("zebra");
    out.hostile = await search("onerror");
    await shot(page, "search.png");
    out.status = await page.textContent("#site-search-status");
    out.nothing = await search("no such thing anywhere");
    out.nothingStatus = await page.textContent("#site-search-status");
    await search("zebra");
    await page.click("#site-search-results a");
    await page.waitForLoadState("load");
    out.followed = page.url();
    out.pwned = await page.evaluate(() => window.__pwned || 0);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
