// Live mode's latency as a person feels it: turn Live on in the Text to image tab, type a prompt at TYPE_MS a key,
// and time from the last keystroke to the last change of the live picture (the final prompt's picture).
// Run by bench/live_page.py with APP_URL set; prints one JSON line per round and exits non-zero on a failure.
import { chromium } from "playwright-core";

const url = process.env.APP_URL;
const prompts = (process.env.PROMPTS || "cat face|red heart|pizza").split("|");
const typeMs = Number(process.env.TYPE_MS || 80);
const quietMs = Number(process.env.QUIET_MS || 4000); // no change for this long: the last picture has come
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.getByText("Emoji from noise").first().waitFor({ timeout: 60000 });
  await page.getByRole("tab", { name: "Text to image" }).click();
  await page.getByText(/^Live: redraw one picture/).click();
  const prompt = page.getByRole("textbox", { name: "Prompt", exact: true }).locator("visible=true");
  // every change of the live picture's src, with its time on the page's clock
  await page.evaluate(() => {
    window.liveChanges = [];
    window.lastKey = 0; // the last keystroke's time, on the same clock
    document.addEventListener("keydown", () => { window.lastKey = performance.now(); }, true);
    const block = [...document.querySelectorAll(".block")].find((b) => b.textContent.includes("Live picture"));
    const seen = () => block.querySelector("img")?.getAttribute("src") || "";
    let last = seen();
    new MutationObserver(() => {
      const now = seen();
      if (now !== last) window.liveChanges.push(performance.now());
      last = now;
    }).observe(block, { subtree: true, childList: true, attributes: true });
  });
  // a first round, not reported: the app's first picture and its caption index warm up
  await prompt.pressSequentially("warm up", { delay: typeMs });
  await page.waitForTimeout(3 * quietMs);
  for (const text of prompts) {
    await prompt.fill("");
    await page.waitForTimeout(quietMs);
    await page.evaluate(() => { window.liveChanges = []; });
    await prompt.pressSequentially(text, { delay: typeMs });
    await page.waitForTimeout(quietMs);
    const lastKey = await page.evaluate(() => window.lastKey);
    const changes = await page.evaluate(() => window.liveChanges);
    const after = changes.filter((t) => t > lastKey);
    if (after.length === 0) throw new Error(`no live picture after typing "${text}"`);
    const latency = (after[after.length - 1] - lastKey) / 1000;
    console.log(JSON.stringify({ prompt: text, keys: text.length, pictures: changes.length, latency_s: latency }));
  }
} catch (error) {
  console.error("FAIL: " + (error.stack || String(error)));
  process.exitCode = 1;
} finally {
  await browser.close();
}
