"""What one more event costs the page as its list grows, in headless Chromium.

    .venv/bin/python bench/page_rows.py

The list is the page's (its stylesheet, ``ol#messages`` of ``li.message`` rows, and its
insert: read whether the reader is at the bottom, insert in stream order, scroll). For
each list length: the mean time of 200 events, one per task (a timer turn between them,
as events arriving over the socket have). Then the same with rows beyond 500 removed, as
``app.js`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
STYLE = (ROOT / "webapp/app/static/style.css").read_text()
PAGE = """<!doctype html><html><head><style>%s</style></head><body><main>
<ol id="messages" class="messages"></ol></main><script>
var list = document.getElementById("messages");
var cap = Infinity;
function row(i) {
  var li = document.createElement("li");
  li.className = "message";
  li.dataset.id = String(i);
  li.innerHTML = '<div class="meta"><time>12:00:00</time> <span class="channel">message' +
    '</span> <span class="from">system</span></div><p class="body">event ' + i + "</p>";
  return li;
}
function add(i) {
  var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  var li = row(i);
  var before = list.lastElementChild;
  list.insertBefore(li, before ? before.nextSibling : list.firstChild);
  while (list.childElementCount > cap) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}
// To a length, at once (one layout, not one per row).
window.fill = function (n) {
  var rows = document.createDocumentFragment();
  for (var i = list.childElementCount; i < n; i++) rows.append(row(i));
  list.append(rows);
  while (list.childElementCount > n) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
};
window.timed = async function (n) {
  var total = 0;
  for (var i = 0; i < n; i++) {
    var t = performance.now();
    add(i);
    list.scrollHeight;  // the layout this insert caused, inside the measurement
    total += performance.now() - t;
    await new Promise(function (r) { setTimeout(r, 0); });
  }
  return total / n;
};
</script></body></html>"""


def main() -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        page = browser.new_page()
        page.set_content(PAGE % STYLE)
        page.evaluate("fill(500)")
        page.evaluate("timed(200)")  # warm-up
        print(f"{'rows':>15}  {'ms per event':>12}")
        for rows in (500, 2_000, 5_000, 10_000, 20_000):
            page.evaluate(f"fill({rows})")
            print(f"{rows:>15,}  {page.evaluate('timed(200)'):>12.2f}")
        page.evaluate("fill(500); cap = 500")
        print(f"{'500, capped':>15}  {page.evaluate('timed(200)'):>12.2f}")
        browser.close()


if __name__ == "__main__":
    main()
