#!/usr/bin/env node
/* Opens every page type of a built atlas in Chromium, from file:// and from a local HTTP
   server, and checks: no console error, no failed request, the channel filter and sorting
   work, #unit-N anchors land on their card, axe-core finds no serious/critical violation
   (light and dark). Saves screenshots into the artifacts folder.

   usage: node check-site.js SITE_DIR [ARTIFACTS_DIR]
   env:   CHROMIUM_PATH (default /usr/bin/chromium), PYTHON (default python3) */
"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");
const { spawn } = require("child_process");
const { pathToFileURL } = require("url");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const PYTHON = process.env.PYTHON || "python3";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"];

const failures = [];
function fail(where, message) {
  failures.push(`${where}: ${message}`);
  console.error(`FAIL ${where}: ${message}`);
}
function ok(where, message) {
  console.log(`ok   ${where}: ${message}`);
}

/* The first page of each type: atlas, model, layer (the one with most channels), unit. */
function findPages(site) {
  const isDir = (p) => fs.statSync(p).isDirectory();
  const dirs = (p) => fs.readdirSync(p).filter((n) => !n.startsWith(".") && n !== "assets" && isDir(path.join(p, n))).sort();
  const model = dirs(site).find((m) => fs.existsSync(path.join(site, m, "index.html")));
  if (!model) throw new Error(`no model page under ${site}`);
  const layers = dirs(path.join(site, model)).filter((l) => fs.existsSync(path.join(site, model, l, "index.json")));
  if (!layers.length) throw new Error(`no layer page under ${site}/${model}`);
  const channelsOf = (l) => dirs(path.join(site, model, l)).filter((c) => /^\d+$/.test(c)).sort((a, b) => a - b);
  const layer = layers.reduce((best, l) => (channelsOf(l).length > channelsOf(best).length ? l : best), layers[0]);
  const channels = channelsOf(layer);
  const extra = {};
  for (const l of layers) {
    const doc = JSON.parse(fs.readFileSync(path.join(site, model, l, "index.json"), "utf8"));
    const dead = doc.units.find((u) => u.dead);
    if (dead) {
      extra["dead-unit"] = `${model}/${l}/${dead.channel}/index.html`;
      break;
    }
  }
  // An experiment page ([[models.experiments]]): a folder of a layer that is not a channel.
  for (const l of layers) {
    const exp = dirs(path.join(site, model, l)).find((d) => !/^\d+$/.test(d) && fs.existsSync(path.join(site, model, l, d, "index.html")));
    if (exp) {
      extra.experiment = `${model}/${l}/${exp}/index.html`;
      break;
    }
  }
  return {
    model,
    layer,
    channels,
    pages: {
      index: "index.html",
      model: `${model}/index.html`,
      layer: `${model}/${layer}/index.html`,
      unit: `${model}/${layer}/${channels[0]}/index.html`,
      "404": "404.html",
      ...extra,
    },
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startServer(site) {
  const port = await freePort();
  const child = spawn(PYTHON, ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", site], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const base = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`http.server exited: ${stderr}`);
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => { socket.end(); resolve(true); });
      socket.on("error", () => resolve(false));
    });
    if (up) return { base, stop: () => child.kill() };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error("http.server did not start");
}

/* Opens a page and records console errors, page errors and failed requests. */
async function openPage(context, url, where) {
  const page = await context.newPage();
  const problems = [];
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console error: ${msg.text()}`); });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} (${req.failure() && req.failure().errorText})`));
  page.on("response", (res) => { if (res.status() >= 400) problems.push(`HTTP ${res.status()}: ${res.url()}`); });
  await page.goto(url, { waitUntil: "load" });
  // lazy images below the fold must load too: scroll through the page
  await page.evaluate(async () => {
    for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight) {
      window.scrollTo(0, y);
      await new Promise((r) => setTimeout(r, 30));
    }
    window.scrollTo(0, 0);
  });
  await page.waitForLoadState("networkidle").catch(() => {});
  const broken = await page.evaluate(() =>
    Array.from(document.images).filter((img) => img.complete && img.naturalWidth === 0).map((img) => img.getAttribute("src")));
  broken.forEach((src) => problems.push(`image did not load: ${src}`));
  if (problems.length) problems.forEach((p) => fail(where, p));
  else ok(where, "no console error, no failed request");
  return page;
}

async function checkAxe(page, where) {
  await page.addScriptTag({ path: require.resolve("axe-core") });
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  serious.forEach((v) => fail(where, `axe ${v.impact} ${v.id}: ${v.help} at ${v.nodes.join(", ")}`));
  violations.filter((v) => !serious.includes(v)).forEach((v) => console.log(`note ${where}: axe ${v.impact} ${v.id}: ${v.help}`));
  if (!serious.length) ok(where, `axe: no serious or critical violation (${violations.length} minor)`);
}

async function visibleChannels(page) {
  return page.$$eval(".unit-card", (cards) => cards.filter((c) => !c.hidden && c.offsetParent !== null).map((c) => Number(c.dataset.channel)));
}

async function checkFilterAndSort(page, channels, where) {
  const total = channels.length;
  const pick = Number(channels[Math.min(1, channels.length - 1)]);
  await page.fill("#channel-filter", String(pick));
  let shown = await visibleChannels(page);
  if (shown.length === 1 && shown[0] === pick) ok(where, `filter "${pick}" shows only channel ${pick}`);
  else fail(where, `filter "${pick}" shows channels [${shown}]`);
  const lo = Number(channels[0]), hi = Number(channels[Math.min(2, total - 1)]);
  await page.fill("#channel-filter", `${lo}-${hi}`);
  shown = await visibleChannels(page);
  const expected = channels.map(Number).filter((c) => c >= lo && c <= hi);
  if (JSON.stringify(shown) === JSON.stringify(expected)) ok(where, `filter "${lo}-${hi}" shows [${shown}]`);
  else fail(where, `filter "${lo}-${hi}" shows [${shown}], expected [${expected}]`);
  await page.fill("#channel-filter", "");
  shown = await visibleChannels(page);
  if (shown.length === total) ok(where, "empty filter shows every channel");
  else fail(where, `empty filter shows ${shown.length} of ${total}`);

  await page.selectOption("#sort-by", "activation");
  const values = await page.$$eval(".unit-card", (cards) => cards.map((c) => c.dataset.activation).filter((v) => v !== "").map(Number));
  const sorted = values.every((v, i) => i === 0 || values[i - 1] >= v);
  if (sorted) ok(where, "sort by activation orders the cards, highest first");
  else fail(where, `sort by activation gives ${values}`);
  await page.selectOption("#sort-by", "channel");
  const order = await visibleChannels(page);
  if (order.every((v, i) => i === 0 || order[i - 1] < v)) ok(where, "sort by channel restores channel order");
  else fail(where, `sort by channel gives ${order}`);
}

/* Opening LAYER#unit-N must scroll its card into view; also after a filter hid it. */
async function checkAnchor(context, layerUrl, channels, where) {
  const target = channels[channels.length - 1];
  const page = await context.newPage();
  await page.setViewportSize({ width: 800, height: 420 }); // short, so landing needs a scroll
  await page.goto(`${layerUrl}#unit-${target}`, { waitUntil: "load" });
  await page.waitForTimeout(200);
  const landed = async () => page.evaluate((id) => {
    const el = document.getElementById(id);
    if (!el) return { found: false };
    const r = el.getBoundingClientRect();
    return { found: true, top: r.top, inView: r.top >= -1 && r.top < window.innerHeight / 2, scrollY: window.scrollY };
  }, `unit-${target}`);
  let r = await landed();
  if (r.found && r.inView) ok(where, `#unit-${target} lands on its card (top ${Math.round(r.top)} px, scrolled ${Math.round(r.scrollY)} px)`);
  else fail(where, `#unit-${target} does not land on its card: ${JSON.stringify(r)}`);

  await page.evaluate(() => window.scrollTo(0, 0));
  await page.fill("#channel-filter", String(channels[0]));
  await page.evaluate((id) => { location.hash = ""; location.hash = id; }, `unit-${target}`);
  await page.waitForTimeout(200);
  r = await landed();
  if (r.found && r.inView) ok(where, "an anchor to a filtered-out card clears the filter and lands on it");
  else fail(where, `anchor to a filtered-out card: ${JSON.stringify(r)}`);
  await page.close();
}

async function checkSite(browser, pages, base, scheme, artifacts, info) {
  for (const scheme_ of ["light", "dark"]) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: scheme_ });
    for (const [type, rel] of Object.entries(pages)) {
      const where = `${scheme} ${scheme_} ${type} (${rel})`;
      const page = await openPage(context, base(rel), where);
      if (type === "layer" && scheme_ === "light") await checkFilterAndSort(page, info.channels, where);
      await checkAxe(page, where);
      if (scheme === "http" && ["index", "layer", "unit", "model", "dead-unit"].includes(type)) {
        const file = path.join(artifacts, `${type}-${scheme_}.png`);
        await page.screenshot({ path: file, fullPage: type !== "layer" });
        if (scheme_ === "light" && type === "layer") {
          await page.setViewportSize({ width: 390, height: 844 });
          await page.screenshot({ path: path.join(artifacts, "layer-mobile.png") });
        }
      }
      await page.close();
    }
    if (scheme_ === "light") await checkAnchor(context, base(pages.layer), info.channels, `${scheme} anchor`);
    await context.close();
  }
}

async function main() {
  const site = path.resolve(process.argv[2] || "");
  const artifacts = path.resolve(process.argv[3] || path.join(__dirname, "artifacts"));
  if (!process.argv[2] || !fs.existsSync(path.join(site, "index.html"))) {
    console.error("usage: node check-site.js SITE_DIR [ARTIFACTS_DIR] (SITE_DIR must hold index.html)");
    process.exit(2);
  }
  fs.mkdirSync(artifacts, { recursive: true });
  const info = findPages(site);
  console.log(`checking ${site}: model ${info.model}, layer ${info.layer} (${info.channels.length} channels)`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const server = await startServer(site);
  try {
    await checkSite(browser, info.pages, (rel) => pathToFileURL(path.join(site, rel)).href, "file", artifacts, info);
    await checkSite(browser, info.pages, (rel) => server.base + rel, "http", artifacts, info);
  } finally {
    server.stop();
    await browser.close();
  }
  if (failures.length) {
    console.error(`\n${failures.length} browser check(s) failed`);
    process.exit(1);
  }
  console.log(`\nall browser checks passed; screenshots in ${artifacts}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
