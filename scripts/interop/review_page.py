#!/usr/bin/env python3
"""Checks the recordings review page (src/http/review.html) in headless Chromium.

    python3 review_page.py --base http://127.0.0.1:PORT --expect ID [--expect ID ...]
                           [--token T] --screenshot PATH

Opens {base}/ and checks that:

- the list loads (body[data-loaded=true], no data-error) within 15 s;
- every --expect recording has a row (data-recording-id);
- the first expected recording's waveform canvas gets drawn, with coloured
  pixels in both lanes (far end on top, siprelay below);
- its <audio class="player"> plays: currentTime passes 0.3 s with no error,
  and its duration is finite and positive.

Then it saves a screenshot. Prints one line per check ("ok   ..." or
"FAIL ..."). Exits 0 if everything passed, 1 on a failed check, 2 if
selenium, Chromium or chromedriver is missing or will not start.

Needs selenium (pip install selenium) and Debian's chromium and
chromium-driver packages. The browser and the driver are given by path, so
selenium never downloads anything.
"""

import argparse
import os
import sys
import time

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"

# Pixels that count as waveform: clearly coloured (the lane colours are blue
# and orange; background, divider, time scale and playhead are all grey).
PIXELS_JS = """
const canvas = arguments[0];
const w = canvas.width, h = canvas.height;
if (!w || !h) return {w: w, h: h, top: 0, bottom: 0};
const d = canvas.getContext('2d').getImageData(0, 0, w, h).data;
let top = 0, bottom = 0;
const half = Math.floor(h / 2);
for (let y = 0; y < h; y++) {
  for (let x = 0; x < w; x++) {
    const i = (y * w + x) * 4;
    const r = d[i], g = d[i + 1], b = d[i + 2], a = d[i + 3];
    if (a < 128) continue;
    if (Math.max(r, g, b) - Math.min(r, g, b) < 60) continue;
    if (y < half) top++; else bottom++;
  }
}
return {w: w, h: h, top: top, bottom: bottom};
"""

PLAY_JS = """
const audio = arguments[0], done = arguments[arguments.length - 1];
let p;
try { p = audio.play(); } catch (e) { done('play() threw: ' + e); return; }
if (!p || !p.then) { done(null); return; }
p.then(() => done(null), (e) => done('play() rejected: ' + (e && e.name) + ': ' + (e && e.message)));
"""

AUDIO_STATE_JS = """
const a = arguments[0];
return {
  currentTime: a.currentTime,
  duration: isFinite(a.duration) ? a.duration : String(a.duration),
  paused: a.paused,
  ended: a.ended,
  readyState: a.readyState,
  networkState: a.networkState,
  error: a.error ? ('code ' + a.error.code + (a.error.message ? ': ' + a.error.message : '')) : null,
  src: a.currentSrc || a.src,
};
"""

# "loaded" once the page says so; "not-the-page" when what loaded is not the
# review page at all (a 401 text, a browser error page); null while waiting.
LOAD_STATE_JS = """
if (document.body && document.body.dataset.loaded === 'true') return 'loaded';
if (document.readyState === 'complete' && !document.querySelector('ol#list')) return 'not-the-page';
return null;
"""

MIN_LANE_PIXELS = 20


class Checks:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok   {what}", flush=True)

    def fail(self, what):
        self.failed += 1
        print(f"FAIL {what}", flush=True)

    def check(self, cond, what, why=""):
        if cond:
            self.ok(what)
        else:
            self.fail(what + (f": {why}" if why else ""))
        return cond


def wait_for(fn, timeout, interval=0.1):
    """Polls fn() until it returns something truthy or timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def css_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def page_url(base, token):
    url = base.rstrip("/") + "/"
    if token:
        url += "?token=" + token
    return url


def start_browser(args):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        print(f"FAIL selenium is not installed ({e}); run: pip install selenium", flush=True)
        sys.exit(2)
    for path, pkg in ((args.chromium, "chromium"), (args.chromedriver, "chromium-driver")):
        if not os.access(path, os.X_OK):
            print(f"FAIL {path} not found; run: apt-get install -y chromium chromium-driver ({pkg})", flush=True)
            sys.exit(2)
    # Never let selenium fetch a browser or a driver from the network.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        "--window-size=1280,900",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=args.chromedriver)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as e:  # WebDriverException and friends
        print(f"FAIL could not start {args.chromium} via {args.chromedriver}: {e}".rstrip(), flush=True)
        sys.exit(2)
    driver.set_script_timeout(15)
    driver.set_page_load_timeout(30)
    return driver


def print_browser_log(driver):
    try:
        entries = driver.get_log("browser")
    except Exception:
        return
    if entries:
        print("browser console:", flush=True)
        for e in entries:
            print(f"  {e.get('level')}: {e.get('message')}", flush=True)


def run(driver, args, checks):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    url = page_url(args.base, args.token)
    shown = page_url(args.base, "***" if args.token else None)
    try:
        driver.get(url)
    except WebDriverException as e:
        checks.fail(f"open {shown}: {e.msg if hasattr(e, 'msg') else e}")
        return

    body = driver.find_element(By.TAG_NAME, "body")
    state = wait_for(lambda: driver.execute_script(LOAD_STATE_JS), 15)
    if state != "loaded":
        why = ("this is not the review page" if state == "not-the-page"
               else "body[data-loaded] is still not true after 15 s")
        checks.fail(f"page {shown} loaded its list: {why}"
                    f" (title {driver.title!r}, text {body.text[:200]!r})")
        return
    checks.ok(f"page {shown} loaded its list")
    error = body.get_attribute("data-error")
    if not checks.check(not error, "list loaded without error", error or ""):
        return

    rows = driver.find_elements(By.CSS_SELECTOR, "[data-recording-id]")
    listed = [r.get_attribute("data-recording-id") for r in rows]
    print(f"     {len(listed)} recording(s) listed", flush=True)
    for rid in args.expect:
        checks.check(rid in listed, f"recording {rid} is listed",
                     f"not among {listed[:10]}{' ...' if len(listed) > 10 else ''}")

    rid = args.expect[0]
    if rid not in listed:
        return
    row = driver.find_element(By.CSS_SELECTOR, f"[data-recording-id={css_quote(rid)}]")

    # -- waveform
    canvas = row.find_element(By.CSS_SELECTOR, "canvas.waveform")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    drawn = wait_for(lambda: canvas.get_attribute("data-drawn") == "true"
                     or canvas.get_attribute("data-error"), 3)
    if not drawn:
        # Not drawn by itself (lazy loading): a click on the canvas draws it.
        try:
            canvas.click()
        except WebDriverException:
            driver.execute_script("arguments[0].click();", canvas)
        wait_for(lambda: canvas.get_attribute("data-drawn") == "true"
                 or canvas.get_attribute("data-error"), 15)
    wave_error = canvas.get_attribute("data-error")
    is_drawn = canvas.get_attribute("data-drawn") == "true"
    if checks.check(is_drawn and not wave_error, f"waveform of {rid} drawn",
                    wave_error or f"data-drawn={canvas.get_attribute('data-drawn')!r}"
                    f" data-state={canvas.get_attribute('data-state')!r}"):
        px = driver.execute_script(PIXELS_JS, canvas)
        detail = f"{px['top']} far-end and {px['bottom']} siprelay pixels on a {px['w']}x{px['h']} canvas"
        checks.check(px["top"] >= MIN_LANE_PIXELS, f"far end lane (top) has waveform: {detail}",
                     f"fewer than {MIN_LANE_PIXELS}")
        checks.check(px["bottom"] >= MIN_LANE_PIXELS, f"siprelay lane (bottom) has waveform: {detail}",
                     f"fewer than {MIN_LANE_PIXELS}")

    # -- playback
    audio = row.find_element(By.CSS_SELECTOR, "audio.player")
    try:
        play_error = driver.execute_async_script(PLAY_JS, audio)
    except WebDriverException as e:
        play_error = f"play() did not settle: {getattr(e, 'msg', e)}"
    state = {}

    def playing():
        state.update(driver.execute_script(AUDIO_STATE_JS, audio))
        if state["error"]:
            return True
        return state["currentTime"] > 0.3 and not state["paused"]

    if play_error is None:
        wait_for(playing, 10, 0.2)
    else:
        state.update(driver.execute_script(AUDIO_STATE_JS, audio))
    src = state.get("src", "")
    if args.token and src:
        src = src.replace(args.token, "***")
    checks.check(play_error is None and not state.get("error") and state.get("currentTime", 0) > 0.3
                 and not state.get("paused", True),
                 f"audio of {rid} plays (currentTime {state.get('currentTime', 0):.2f} s)",
                 play_error or state.get("error") or
                 f"paused={state.get('paused')} ended={state.get('ended')} readyState={state.get('readyState')}"
                 f" networkState={state.get('networkState')} src={src}")
    duration = state.get("duration")
    checks.check(isinstance(duration, (int, float)) and duration > 0,
                 f"audio of {rid} has a finite duration ({duration} s)",
                 f"duration is {duration!r}")
    # Leave the playhead visible in the screenshot.
    time.sleep(0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the daemon's HTTP address, e.g. http://127.0.0.1:8080")
    ap.add_argument("--expect", action="append", required=True, metavar="ID",
                    help="a recording id that must be listed; the first one is drawn and played")
    ap.add_argument("--token", help="API token, passed to the page as ?token=")
    ap.add_argument("--screenshot", required=True, metavar="PATH", help="where to save a PNG of the page")
    ap.add_argument("--chromium", default=DEFAULT_CHROMIUM, help=f"browser binary (default {DEFAULT_CHROMIUM})")
    ap.add_argument("--chromedriver", default=DEFAULT_CHROMEDRIVER,
                    help=f"chromedriver binary (default {DEFAULT_CHROMEDRIVER})")
    args = ap.parse_args()

    driver = start_browser(args)
    checks = Checks()
    try:
        try:
            run(driver, args, checks)
        except Exception as e:  # an unexpected selenium error is a failed check, not a traceback
            checks.fail(f"unexpected error: {type(e).__name__}: {e}")
        try:
            d = os.path.dirname(os.path.abspath(args.screenshot))
            os.makedirs(d, exist_ok=True)
            checks.check(driver.save_screenshot(args.screenshot), f"screenshot saved to {args.screenshot}")
        except Exception as e:
            checks.fail(f"screenshot {args.screenshot}: {e}")
        if checks.failed:
            print_browser_log(driver)
    finally:
        try:
            driver.quit()
        except Exception:
            pass
    print(f"review page: {checks.passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
