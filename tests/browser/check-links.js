#!/usr/bin/env node
/* Link and anchor check of a built atlas, without a browser: every href/src of every HTML
   page must be page-relative (404.html, rel=canonical and given prefixes excepted), resolve to an
   existing file (never a bare folder), page links must end in index.html, and #fragments
   must name an id on the target page.

   usage: node check-links.js SITE_DIR [ALLOWED_ABSOLUTE_PREFIX ...] */
"use strict";

const fs = require("fs");
const path = require("path");

function htmlFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...htmlFiles(full));
    else if (entry.name.endsWith(".html")) out.push(full);
  }
  return out.sort();
}

const decodeEntities = (s) => s.replace(/&amp;/g, "&").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">");

/* Attributes of start tags; enough for generated HTML whose attributes are always quoted. */
function scan(file) {
  const html = fs.readFileSync(file, "utf8").replace(/<!--[\s\S]*?-->/g, "").replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1>/gi, (m) => m.replace(/>[\s\S]*</, "><"));
  const ids = new Set();
  const links = [];
  for (const tag of html.matchAll(/<([a-zA-Z][\w-]*)\b([^>]*)>/g)) {
    const name = tag[1].toLowerCase();
    const attrs = {};
    for (const attr of tag[2].matchAll(/([\w:-]+)\s*=\s*"([^"]*)"/g)) attrs[attr[1].toLowerCase()] = decodeEntities(attr[2]);
    if (attrs.id) ids.add(attrs.id);
    for (const key of ["href", "src"]) {
      if (key in attrs) links.push({ tag: name, key, value: attrs[key], canonical: name === "link" && attrs.rel === "canonical" });
    }
  }
  return { ids, links };
}

function main() {
  const site = path.resolve(process.argv[2] || "");
  const allowed = process.argv.slice(3);
  if (!process.argv[2] || !fs.existsSync(path.join(site, "index.html"))) {
    console.error("usage: node check-links.js SITE_DIR [ALLOWED_ABSOLUTE_PREFIX ...]");
    process.exit(2);
  }
  const cache = new Map();
  const scanned = (file) => {
    if (!cache.has(file)) cache.set(file, scan(file));
    return cache.get(file);
  };
  const problems = [];
  let checked = 0;
  const pages = htmlFiles(site);
  for (const page of pages) {
    const rel = path.relative(site, page).split(path.sep).join("/");
    for (const link of scanned(page).links) {
      checked++;
      const v = link.value;
      if (v.startsWith("data:")) continue;
      if (/^[a-z][a-z0-9+.-]*:/i.test(v) || v.startsWith("//")) {
        if (rel !== "404.html" && !link.canonical && !allowed.some((p) => v.startsWith(p))) problems.push(`${rel}: absolute link ${v}`);
        continue;
      }
      if (v.startsWith("/")) { problems.push(`${rel}: root-relative link ${v}`); continue; }
      const [rawPath, fragment] = v.split("#", 2);
      const target = rawPath ? path.resolve(path.dirname(page), decodeURIComponent(rawPath.split("?")[0])) : page;
      if (target !== site && !target.startsWith(site + path.sep)) { problems.push(`${rel}: link ${v} leaves the site`); continue; }
      if (!fs.existsSync(target)) { problems.push(`${rel}: broken link ${v}`); continue; }
      if (fs.statSync(target).isDirectory()) { problems.push(`${rel}: link ${v} is a folder (link to index.html)`); continue; }
      if (link.tag === "a" && target.endsWith(".html") && path.basename(target) !== "index.html" && target !== page) {
        problems.push(`${rel}: page link ${v} does not end in index.html`);
      }
      if (fragment && target.endsWith(".html") && !scanned(target).ids.has(decodeURIComponent(fragment))) {
        problems.push(`${rel}: missing anchor ${v}`);
      }
    }
  }
  problems.forEach((p) => console.error(`FAIL ${p}`));
  console.log(`${pages.length} pages, ${checked} links checked, ${problems.length} problem(s)`);
  process.exit(problems.length ? 1 : 0);
}

main();
