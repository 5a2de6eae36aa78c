// A person's session in a real browser: type a prompt, Generate, wait for the images, switch scheduler
// and steps, Generate again, read a result's PNG settings back, save a screenshot.
// Run by tests/test_browser.py with APP_URL and SCREENSHOT set; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const url = process.env.APP_URL;
const screenshot = process.env.SCREENSHOT || "app.png";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});

function fail(message) {
  console.error("FAIL: " + message);
  process.exitCode = 1;
}

// The tEXt chunks of a PNG file as {key: value}.
function pngText(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = {};
  let offset = 8; // the signature
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.slice(offset + 4, offset + 8));
    if (type === "tEXt") {
      const data = bytes.slice(offset + 8, offset + 8 + length);
      const zero = data.indexOf(0);
      text[new TextDecoder("latin1").decode(data.slice(0, zero))] = new TextDecoder("latin1").decode(data.slice(zero + 1));
    }
    offset += 12 + length;
  }
  return text;
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.getByText("Emoji from noise").first().waitFor({ timeout: 60000 });
  await page.getByRole("tab", { name: "Text to image" }).click();

  const prompt = page.getByLabel("Prompt", { exact: true }).locator("visible=true");
  await prompt.fill("red heart");
  const steps = page.getByRole("spinbutton", { name: /Steps/ }).locator("visible=true");
  await steps.fill("5");
  await steps.press("Enter");
  const settings = page.locator(".cm-content").locator("visible=true");

  await page.getByRole("button", { name: "Generate" }).locator("visible=true").click();
  await settings.filter({ hasText: '"prompt": "red heart"' }).waitFor({ timeout: 120000 });
  const images = page.locator("button.thumbnail-item img").locator("visible=true");
  await images.first().waitFor({ timeout: 30000 });
  if ((await images.count()) < 1) fail("no images in the gallery");

  // switch to DDPM: the steps default follows (1000); set 5 again and generate
  await page.getByLabel("DDPM", { exact: true }).locator("visible=true").check();
  await page.waitForFunction(() => [...document.querySelectorAll("input[type=number]")].some((e) => e.offsetParent && e.value === "1000"));
  await steps.fill("5");
  await steps.press("Enter");
  await page.getByRole("button", { name: "Generate" }).locator("visible=true").click();
  await settings.filter({ hasText: '"scheduler": "ddpm"' }).waitFor({ timeout: 120000 });

  // the PNG behind a gallery image carries its settings
  const source = await images.first().getAttribute("src");
  const response = await page.request.get(new URL(source, url).toString());
  const text = pngText(new Uint8Array(await response.body()));
  if (text.prompt !== "red heart") fail(`PNG prompt is ${JSON.stringify(text.prompt)}`);
  if (text.scheduler !== "ddpm") fail(`PNG scheduler is ${JSON.stringify(text.scheduler)}`);
  if (text.steps !== "5") fail(`PNG steps is ${JSON.stringify(text.steps)}`);
  console.log("PNG settings: " + JSON.stringify(text));
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (error) {
  fail(error.stack || String(error));
} finally {
  await browser.close();
}
