// The history in a real browser: generate, generate again with other settings, click the first generation's
// thumbnail in the history: its settings come back into the controls and its pictures into the gallery.
// Run by tests/test_browser.py with APP_URL set; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const url = process.env.APP_URL;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});

function fail(message) {
  console.error("FAIL: " + message);
  process.exitCode = 1;
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.getByText("Emoji from noise").first().waitFor({ timeout: 60000 });
  const steps = page.getByRole("spinbutton", { name: /Steps/ }).locator("visible=true");
  const seed = page.getByRole("spinbutton", { name: "Seed", exact: true }).locator("visible=true");
  const settings = page.locator(".cm-content").locator("visible=true");
  const generate = page.getByRole("button", { name: "Generate" }).locator("visible=true");
  const history = page.locator(".block", { hasText: "History (this session)" }).locator("visible=true");

  async function run(stepCount, seedValue) {
    await steps.fill(String(stepCount));
    await steps.press("Enter");
    await seed.fill(String(seedValue));
    await seed.press("Enter");
    await generate.click();
    await settings.filter({ hasText: `"seed": ${seedValue}` }).waitFor({ timeout: 120000 });
  }
  await run(3, 31);
  await run(4, 32);
  const thumbnails = history.locator("button.thumbnail-item");
  await page.waitForFunction(
    () => [...document.querySelectorAll(".block")].some((b) => b.textContent.includes("History (this session)") &&
      b.querySelectorAll("button.thumbnail-item").length === 2), null, { timeout: 30000 });
  await settings.filter({ hasText: '"seed": 32' }).waitFor({ timeout: 10000 });
  await thumbnails.nth(1).click(); // the older one: seed 31, 3 steps
  await settings.filter({ hasText: '"seed": 31' }).waitFor({ timeout: 30000 });
  if ((await seed.inputValue()) !== "31") fail(`seed is ${await seed.inputValue()} after the click`);
  if ((await steps.inputValue()) !== "3") fail(`steps is ${await steps.inputValue()} after the click`);
  console.log("history restored seed 31, 3 steps");
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
} catch (error) {
  fail(error.stack || String(error));
} finally {
  await browser.close();
}
