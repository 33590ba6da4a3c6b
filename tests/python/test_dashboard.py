"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium.

The dashboard process is started on a free port of 127.0.0.1 and stopped by its PID; the
browser gets a fresh profile and no background networking (this machine has no internet).
"""

import html
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, Dashboard

CHROMIUM = os.environ.get("SODEDA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SODEDA_CHROMEDRIVER", "/usr/bin/chromedriver")
TEST_SET = DATA / "test-set.jsonl"


@pytest.fixture
def dashboard(replica, tmp_path):
    d = Dashboard(replica, tmp_path / "cache", TEST_SET, tmp_path / "dashboard.log")
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), \
        "chromium and chromium-driver are needed (scripts/install-deps installs them)"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    profile = tempfile.TemporaryDirectory(prefix="sodeda-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1200,1500", f"--user-data-dir={profile.name}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(180)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def wait_for(predicate, what, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def click_and_wait(driver, element):
    """Clicks a link or button that loads a new page, and waits until the new page is
    complete (a click returns before the navigation ends). The old page is marked, so the
    wait cannot end on it."""
    from selenium.common.exceptions import WebDriverException
    driver.execute_script("window.__sodedaOldPage = true;")
    element.click()

    def new_page_ready():
        try:
            return driver.execute_script(
                "return window.__sodedaOldPage === undefined"
                " && document.readyState === 'complete';")
        except WebDriverException:
            return False  # between two documents

    wait_for(new_page_ready, "the new page", timeout=180)


def loaded_map(driver):
    """The map <img> once the browser has decoded it (naturalWidth > 0)."""
    from selenium.webdriver.common.by import By
    img = wait_for(lambda: driver.find_elements(By.ID, "map"), "the map element")[0]
    wait_for(lambda: driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", img), "the map image")
    return img


def grid_pixels(png_bytes):
    """RGB pixels of the map's grid area (inside the axes, left of the colour bar)."""
    img = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB")).astype(float)
    h, w, _ = img.shape
    return img[50:h - 40, 70:w - 130]


def assert_not_blank(png_bytes):
    grid = grid_pixels(png_bytes)
    variance = grid.var(axis=(0, 1)).sum()
    colours = len(np.unique(grid.reshape(-1, 3), axis=0))
    assert variance > 100 and colours > 20, \
        f"map looks blank: pixel variance {variance:.1f}, {colours} colours"


def test_page_lists_the_files_with_size_and_cache_state(browser, dashboard, run):
    from selenium.webdriver.common.by import By
    browser.get(dashboard.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#file-table tr")[1:]
    listed = run.list(TEST_SET)
    assert [r.find_element(By.TAG_NAME, "code").text for r in rows] == \
        [f["name"] for f in listed]
    assert all(r.find_element(By.CSS_SELECTOR, "td:nth-child(3)").text == "not built"
               for r in rows)
    status, body, ctype = dashboard.get("/api/files")
    files = json.loads(body)["files"]
    assert ctype.startswith("application/json")
    assert [(f["name"], f["size"]) for f in files] == [(f["name"], f["size"]) for f in listed]


def test_a_listed_file_previews_as_a_map_with_step_buttons(browser, dashboard, run, tmp_path):
    from selenium.webdriver.common.by import By
    browser.get(dashboard.url + "/")
    link = browser.find_element(
        By.XPATH, "//tr[td/code[text()='multi_hour.nc']]//a[text()='preview']")
    click_and_wait(browser, link)
    img = loaded_map(browser)
    first = img.screenshot_as_png
    assert_not_blank(first)
    assert browser.find_element(By.ID, "file-name").text == "multi_hour.nc"
    assert browser.find_element(By.ID, "time").text == "2023-01-01T00:00 UTC"
    # Step forward: another hour, another image.
    click_and_wait(browser, browser.find_element(By.ID, "next"))
    wait_for(lambda: browser.find_element(By.ID, "time").text == "2023-01-01T01:00 UTC",
             "the next time step")
    second = loaded_map(browser).screenshot_as_png
    assert_not_blank(second)
    assert not np.array_equal(grid_pixels(first), grid_pixels(second))
    # The slider has one position per hour of the file.
    slider = browser.find_element(By.ID, "step")
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "5")
    # The preview went through the flow into the same cache the mount and `get` use.
    cached = {f["name"]: f["cached"] for f in run.list(TEST_SET)}
    assert cached["multi_hour.nc"] and sum(cached.values()) == 1, cached
    browser.get(dashboard.url + "/")
    state = browser.find_element(
        By.XPATH, "//tr[td/code[text()='multi_hour.nc']]/td[3]").text
    assert state == "cached"


def fill(browser, name, value):
    """Types `value` into the field `name`; a date-time picker is set as a script would (a
    picker takes keystrokes per segment, in the browser's locale)."""
    from selenium.webdriver.common.by import By
    box = browser.find_element(By.NAME, name)
    if box.get_attribute("type") == "datetime-local":
        browser.execute_script("arguments[0].value = arguments[1];", box, value)
        assert box.get_attribute("value") == value, "the picker holds the time"
    else:
        box.clear()
        box.send_keys(value)


def test_an_ad_hoc_selection_from_the_form(browser, dashboard):
    from selenium.webdriver.common.by import By
    browser.get(dashboard.url + "/")
    for name in ("time_start", "time_end"):
        box = browser.find_element(By.NAME, name)
        assert box.get_attribute("type") == "datetime-local", "times are picked, not typed"
        assert box.get_attribute("value") == "" and not box.get_attribute("placeholder")
    for name in ("lat_start", "lon_end"):
        assert browser.find_element(By.NAME, name).get_attribute("placeholder").startswith("e.g.")
    fields = {"time_start": "2023-01-01T10:00", "time_end": "2023-01-01T11:00",
              "lat_start": "60", "lat_end": "30", "lon_start": "-20", "lon_end": "40",
              "level": "500"}
    for name, value in fields.items():
        fill(browser, name, value)
    browser.find_element(By.CSS_SELECTOR, "input[name=variable][value=temperature]").click()
    click_and_wait(browser, browser.find_element(By.ID, "preview-button"))
    img = loaded_map(browser)
    assert_not_blank(img.screenshot_as_png)
    assert browser.find_elements(By.ID, "error") == []
    assert browser.find_element(By.ID, "file-name").text.startswith("temperature_20230101T10")
    assert browser.find_element(By.ID, "time").text == "2023-01-01T10:00 UTC"
    assert "500 hPa" in browser.find_element(By.NAME, "lv").text
    if os.environ.get("SODEDA_SCREENSHOT"):  # how docs/dashboard.png is made
        browser.save_screenshot(os.environ["SODEDA_SCREENSHOT"])
    # The map endpoint answers a real PNG for the same selection.
    src = img.get_attribute("src")
    status, body, ctype = dashboard.get(src[len(dashboard.url):])
    assert (status, ctype) == (200, "image/png")
    assert body[:8] == b"\x89PNG\r\n\x1a\n"


def displayed_image(browser, img):
    """The pixels of <img> as the browser decoded them (drawn into a canvas: the image's own
    size, whatever its CSS box)."""
    import base64
    data = browser.execute_script(
        "const i = arguments[0], c = document.createElement('canvas');"
        "c.width = i.naturalWidth; c.height = i.naturalHeight;"
        "c.getContext('2d').drawImage(i, 0, 0); return c.toDataURL('image/png');", img)
    png = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_a_map_over_europe_shows_its_coasts_where_they_are(browser, dashboard):
    """Natural Earth's coastlines are drawn over the cells: black pixels at known capes, none
    over open sea or inland; round colour-bar ticks are text, not checked here."""
    from selenium.webdriver.common.by import By
    query = ("time_start=2023-01-01T12:00&lat_start=72&lat_end=34&lon_start=-25&lon_end=45"
             "&variable=2m_temperature")
    browser.get(dashboard.url + "/?" + query)
    assert browser.find_elements(By.ID, "error") == []
    pixels = displayed_image(browser, loaded_map(browser))
    # The grid as src/dashboard/render.rs lays it out: 281 × 153 cells of 0.25° from
    # (25°W, 72°N), drawn 640 × 348 pixels at (70, 52).
    cell_w, cell_h = 640 / 281, 348 / 153

    def at(lon, lat):
        return (round(70 + ((lon + 25) / 0.25 + 0.5) * cell_w),
                round(52 + ((72 - lat) / 0.25 + 0.5) * cell_h))

    def black_near(lon, lat, r=3):
        x, y = at(lon, lat)
        window = pixels[y - r:y + r + 1, x - r:x + r + 1]
        return bool((window.sum(axis=2) == 0).any())

    for cape, lon, lat in [("Land's End", -5.71, 50.07), ("Cape Finisterre", -9.27, 42.88),
                           ("Skagen", 10.6, 57.74), ("Cap Bon", 11.05, 37.08),
                           ("North Cape", 25.78, 71.17)]:
        assert black_near(lon, lat), f"no coastline at {cape}"
    for place, lon, lat in [("the open Atlantic", -18.0, 45.0), ("Bavaria", 11.5, 48.5),
                            ("the Norwegian Sea", 2.0, 68.0)]:
        assert not black_near(lon, lat, 5), f"a coastline drawn over {place}"
    grid = pixels[52:52 + 348, 70:70 + 640]
    assert (grid.sum(axis=2) == 0).sum() > 3000, "coastlines all over Europe"


def test_same_colours_for_all_steps_fixes_the_colour_bar(dashboard):
    """With scale=all, two steps of one file share one colour range (their colour bars,
    labels included, are the same pixels); without it each step has its own."""
    base = ("/map.png?time_start=2023-01-01T00:00&time_end=2023-01-01T05:00"
            "&lat_start=60&lat_end=30&lon_start=-20&lon_end=40&variable=2m_temperature")

    def bar(query):
        status, body, ctype = dashboard.get(base + query)
        assert (status, ctype) == (200, "image/png"), body[:200]
        img = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        return img[:, -110:]  # the colour bar and its labels

    assert not np.array_equal(bar("&t=0"), bar("&t=5")), "each step its own range"
    assert np.array_equal(bar("&t=0&scale=all"), bar("&t=5&scale=all"))


def test_same_colours_for_all_steps_is_refused_beyond_the_preview_size(replica, tmp_path):
    """It reads the whole file: a listed file larger than --preview-max-size gets 413 with
    the sizes, and the map of one step still renders."""
    d = Dashboard(replica, tmp_path / "cache", TEST_SET, tmp_path / "dashboard.log",
                  extra=("--preview-max-size", "1K"))
    try:
        status, body, _ = d.get("/map.png?file=multi_hour.nc&scale=all")
        assert status == 413, body[:300]
        assert b"KiB" in body and b"--preview-max-size" in body, body
        status, _, ctype = d.get("/map.png?file=multi_hour.nc")
        assert (status, ctype) == (200, "image/png")
    finally:
        d.stop()


def test_the_region_picker_fills_the_box_and_the_file_downloads(browser, dashboard):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    browser.get(dashboard.url + "/")
    Select(browser.find_element(By.ID, "region")).select_by_visible_text("Switzerland")
    values = [browser.find_element(By.NAME, n).get_attribute("value")
              for n in ("lat_start", "lat_end", "lon_start", "lon_end")]
    assert values == ["48", "45.75", "5.75", "10.75"]
    fill(browser, "time_start", "2023-01-01T10:00")
    browser.find_element(By.CSS_SELECTOR,
                         "input[name=variable][value='2m_temperature']").click()
    click_and_wait(browser, browser.find_element(By.ID, "preview-button"))
    link = browser.find_element(By.ID, "download")
    assert re.search(r"\(\d+\.\d (KiB|MiB)\)", link.text), link.text
    status, body, ctype = dashboard.get(link.get_attribute("href")[len(dashboard.url):])
    assert (status, ctype) == (200, "application/x-netcdf")
    assert body[:3] == b"CDF", "a NetCDF file"
    size = browser.find_element(By.ID, "file-name").text
    assert size.endswith(".nc")


@pytest.mark.parametrize("fields, expected", [
    ({"lat_start": "100"}, ["latitude", "100"]),
    ({"time_start": "2023-01-01T10:00", "time_end": "2023-01-01T09:00"},
     ["time", "start is after end"]),
    ({"lon_start": "east"}, ["longitude", "east"]),
])
def test_a_bad_selection_shows_its_error(browser, dashboard, fields, expected):
    from selenium.webdriver.common.by import By
    browser.get(dashboard.url + "/")
    for name, value in fields.items():
        fill(browser, name, value)
    browser.find_element(By.CSS_SELECTOR,
                         "input[name=variable][value='2m_temperature']").click()
    click_and_wait(browser, browser.find_element(By.ID, "preview-button"))
    error = wait_for(lambda: browser.find_elements(By.ID, "error"), "the error message")[0]
    assert error.is_displayed()
    for word in expected:
        assert word in error.text, error.text
    assert browser.find_elements(By.ID, "map") == []
    # The server is still up and answers the next page.
    assert dashboard.get("/healthz")[0] == 200


def page_error(body):
    """The text of the page's error message, or None."""
    m = re.search(rb'<div class="error" id="error"[^>]*>(.*?)</div>', body, re.S)
    return None if m is None else html.unescape(re.sub(r"<[^>]+>", "", m.group(1).decode()))


def test_errors_without_a_browser(dashboard, replica, tmp_path):
    # No variable, an unknown file, a map without a selection, too much to read.
    status, body, _ = dashboard.get("/?time_start=2023-01-01T10:00")
    assert status == 200 and "field `variable`" in page_error(body), page_error(body)
    status, body, _ = dashboard.get("/?file=nope.nc")
    assert status == 200 and 'no file named "nope.nc"' in page_error(body)
    status, body, _ = dashboard.get("/map.png?file=nope.nc")
    assert status == 400 and b"nope.nc" in body
    status, body, _ = dashboard.get("/map.png")
    assert status == 400 and b"no selection" in body
    # One point over two months: a tiny file, but one source chunk per hour.
    status, body, _ = dashboard.get("/?time_start=2023-01&time_end=2023-02&lat_start=47"
                                    "&lon_start=8&variable=2m_temperature")
    assert "reads 1416 source chunks" in page_error(body), page_error(body)
    status, body, _ = dashboard.get("/?time_start=2023-01-01&lat_start=47&lon_start=8"
                                    "&variable=2m_temperature")
    assert page_error(body) is None and b'id="map"' in body
    small = Dashboard(replica, tmp_path / "cache2", TEST_SET, tmp_path / "small.log",
                      extra=("--preview-max-size", "1M"))
    try:
        status, body, _ = small.get(
            "/?time_start=2023-01-01T10:00&time_end=2023-01-01T13:00&variable=temperature")
        assert "previews build at most 1.0 MiB" in page_error(body)
        assert not any((tmp_path / "cache2").rglob("*.nc"))
    finally:
        small.stop()
    status, body, _ = dashboard.get("/api/status")
    stats = json.loads(body)
    assert stats["errors"] == 3 and stats["pages"] == 4 and stats["flow_runs"] == 1, stats
