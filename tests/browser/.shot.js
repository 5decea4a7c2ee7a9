const { chromium } = require('playwright-core');
(async () => {
  const [,, url, out, action] = process.argv;
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on('console', m => console.log('console', m.type(), m.text()));
  page.on('pageerror', e => console.log('pageerror', e.message));
  await page.goto(url);
  if (action === 'search') { await page.fill('#site-search-input', 'zebra'); await page.waitForTimeout(300); }
  if (action === 'search2') { await page.fill('#site-search-input', 'conv2 3x3 2'); await page.waitForTimeout(300); }
  if (action === 'branch') { await page.click('.branch-list a >> nth=1'); await page.waitForTimeout(200); }
  if (action === 'similar') { await page.fill('#similar-to', '1'); await page.waitForTimeout(200); }
  await page.screenshot({ path: out, fullPage: action !== 'search' && action !== 'search2' });
  await browser.close();
})();
