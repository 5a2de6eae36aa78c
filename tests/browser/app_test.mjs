// A person's session in a real browser: type a prompt, Generate, wait for the images, switch scheduler
// and steps, Generate again, read a result's PNG settings back; paint a blob on the Image to image sketch pad
// and Generate from it; pick a picture in Inpaint, paint a mask over part of it and Generate; save a screenshot.
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

// Drag the mouse across a canvas from (x0, y0) to (x1, y1), in fractions of its size: one brush stroke.
async function stroke(page, canvas, x0, y0, x1, y1) {
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * x0, box.y + box.height * y0);
  await page.mouse.down();
  for (let k = 1; k <= 15; k++) {
    await page.mouse.move(box.x + box.width * (x0 + ((x1 - x0) * k) / 15), box.y + box.height * (y0 + ((y1 - y0) * k) / 15));
  }
  await page.mouse.up();
}

// Few steps and one image on the visible tab, then Generate; resolves when the settings show `done`.
async function generateFew(page, done) {
  const steps = page.getByRole("spinbutton", { name: /Steps/ }).locator("visible=true");
  await steps.fill("5");
  await steps.press("Enter");
  const count = page.getByRole("spinbutton", { name: /Number of images/ }).locator("visible=true");
  await count.fill("1");
  await count.press("Enter");
  await page.getByRole("button", { name: "Generate" }).locator("visible=true").click();
  await page.locator(".cm-content").locator("visible=true").filter({ hasText: done }).waitFor({ timeout: 120000 });
  const images = page.locator("button.thumbnail-item img").locator("visible=true");
  await images.first().waitFor({ timeout: 30000 });
  const response = await page.request.get(new URL(await images.first().getAttribute("src"), url).toString());
  return pngText(new Uint8Array(await response.body()));
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

  // sketch to emoji: a red stroke on the sketch pad, the prompt "heart", image to image at strength 0.7
  await page.getByRole("tab", { name: "Image to image" }).click();
  const sketch = page.locator("canvas").locator("visible=true").first();
  await sketch.waitFor({ timeout: 30000 });
  await stroke(page, sketch, 0.35, 0.35, 0.65, 0.65);
  const edited = await generateFew(page, '"strength": 0.7');
  if (edited.prompt !== "heart" || edited.strength !== "0.7") fail(`image to image PNG: ${JSON.stringify(edited)}`);
  console.log("image to image PNG: " + JSON.stringify(edited));

  // inpainting: the red heart example, its right half painted over, filled with "blue heart"
  await page.getByRole("tab", { name: "Inpaint" }).click();
  await page.locator("[data-testid=examples] button, .gallery-item").locator("visible=true").nth(4).click();
  const painted = page.locator("canvas").locator("visible=true").first();
  await page.waitForTimeout(1000); // the example is drawn on the canvas
  await stroke(page, painted, 0.6, 0.2, 0.75, 0.8);
  const filled = await generateFew(page, '"inpainting": true');
  if (filled.prompt !== "blue heart" || filled.inpainting !== "True") fail(`inpainting PNG: ${JSON.stringify(filled)}`);
  console.log("inpainting PNG: " + JSON.stringify(filled));
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (error) {
  fail(error.stack || String(error));
} finally {
  await browser.close();
}
