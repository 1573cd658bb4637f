#!/usr/bin/env python3
"""Screenshot a lab report with headless Chromium (Debian's ``chromium`` package).

Usage: ``python scripts/screenshot_report.py [DIR] [--out PNG] [--height N] [--width N]``

Writes ``DIR/screenshot.png`` (or PNG; the whole page, 1280 px wide by
default, blank rows below the page cropped) and prints its path, then checks
in the same browser that every image on the page loaded (exit status 1 if
one did not).  DIR
defaults to ``./crossent-report`` (run ``crossent report`` first).
Exit status 2 if DIR/index.html or chromium is missing; the message says
how to install it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALL_HINT = "apt-get install -y chromium"


def find_chromium():
    """Path of a Chromium binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _report_and_browser(report_dir):
    """``(report_dir, index.html, chromium binary)``, or FileNotFoundError saying what is missing."""
    report_dir = Path(report_dir).resolve()
    page = report_dir / "index.html"
    if not page.is_file():
        raise FileNotFoundError(f"no report at {page} (run `crossent report --out {report_dir}` first)")
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError(f"chromium not found; install it with `{INSTALL_HINT}`")
    return report_dir, page, browser


def _run_headless(browser, *args, timeout):
    """Run headless Chromium offline with a throw-away profile; return its stdout."""
    with tempfile.TemporaryDirectory(prefix="crossent-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", *args]
        return subprocess.run(command, check=True, timeout=timeout, capture_output=True, text=True).stdout


def screenshot(report_dir, *, width=1280, height=12000, output=None, timeout=120):
    """Render ``report_dir/index.html`` to a PNG (blank bottom cropped); return the PNG's path.

    Raises:
        FileNotFoundError: no report in `report_dir`, or no chromium.
        RuntimeError: chromium ran but wrote no image.
    """
    report_dir, page, browser = _report_and_browser(report_dir)
    output = Path(output).resolve() if output else report_dir / "screenshot.png"
    _run_headless(browser, "--hide-scrollbars", f"--screenshot={output}", f"--window-size={width},{height}",
                  page.as_uri(), timeout=timeout)
    if not output.is_file():
        raise RuntimeError(f"chromium did not write {output}")
    _crop_blank_bottom(output)
    return output


_IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "crossent-image-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""


def image_check(report_dir, *, timeout=120):
    """Load ``report_dir/index.html`` in headless Chromium and report which images failed to load.

    Returns ``{"images": n, "broken": [src, ...]}`` as the browser saw it
    (an image counts as loaded when it decoded to a non-zero width).
    """
    import json

    report_dir, page, browser = _report_and_browser(report_dir)
    # a copy beside the original, so that relative image paths resolve the same way
    probe = report_dir / ".image-check.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _IMAGE_CHECK + "</body>"), encoding="utf-8")
    try:
        dom = _run_headless(browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), timeout=timeout)
    finally:
        probe.unlink(missing_ok=True)
    marker = '<pre id="crossent-image-check">'
    if marker not in dom:
        raise RuntimeError("chromium did not run the image check (no result in the page)")
    return json.loads(html.unescape(dom.split(marker, 1)[1].split("</pre>", 1)[0]))


def _crop_blank_bottom(path, margin=40):
    """Cut the white space below the page's end (the window is taller than the page)."""
    try:
        import numpy as np
        from PIL import Image
    except ImportError:  # keep the full window
        return
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
        rows = np.flatnonzero((pixels < 250).any(axis=1))
        if rows.size and rows[-1] + margin < pixels.shape[0]:
            cropped = image.crop((0, 0, image.width, int(rows[-1]) + margin))
    if "cropped" in locals():
        cropped.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="crossent-report", help="report folder (default: crossent-report)")
    parser.add_argument("--out", "--output", dest="output", default=None,
                        help="PNG path (default: DIR/screenshot.png)")
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    parser.add_argument("--height", type=int, default=12000,
                        help="window height in px (blank rows below the page are cropped)")
    args = parser.parse_args(argv)
    try:
        path = screenshot(args.dir, width=args.width, height=args.height, output=args.output)
        check = image_check(args.dir)
    except (FileNotFoundError, RuntimeError, subprocess.SubprocessError) as error:
        print(f"screenshot_report: {error}", file=sys.stderr)
        return 2
    print(path)
    if check["broken"]:
        print(f"screenshot_report: {len(check['broken'])} of {check['images']} images did not load: "
              + ", ".join(check["broken"]), file=sys.stderr)
        return 1
    print(f"all {check['images']} images loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
