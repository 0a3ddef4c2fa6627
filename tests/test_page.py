"""The planners' page in a real browser: Debian's Chromium, driven by Selenium, against a real gunicorn.

Screenshots of each view go to $DEMAND_SCREENSHOTS when it is set (`make screenshots` writes the README's,
docs/images), else to the test's own folder.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from pipeline.registry import Registry
from pipeline.store import open_engine, upgrade
from service.testing import running_service, wait_until

from .conftest import plain_sales, trained

pytestmark = pytest.mark.slow
COVARIATES = ("discount_fraction", "weeks_to_next_holidays")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A registry whose champion reads history: series, week, units sold and the two covariates."""
    folder = tmp_path_factory.mktemp("page")
    plain, _ = plain_sales(folder, seed=3, series=3, weeks=60)
    return trained(folder / "models", plain)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1500"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path):
    folder = Path(os.environ.get("DEMAND_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return lambda driver, name: driver.save_screenshot(str(folder / f"page-{name}.png"))


def element(driver, selector, seconds=15):
    from selenium.webdriver.common.by import By

    found = []
    wait_until(lambda: found.extend(driver.find_elements(By.CSS_SELECTOR, selector)) or found, seconds)
    return found[0]


def open_page(driver, url):
    driver.get(url + "/ui")
    element(driver, "body[data-ready=true]")


def text_of(driver, selector):
    """The element's text, or "" while the page it was on is being replaced."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return driver.find_element("css selector", selector).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def typed(field, text):
    field.clear()
    field.send_keys(text)


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_a_plan_edited_in_the_table_gives_the_numbers_of_forecast_and_each_view_loads_clean(
    models, browser, tmp_path, screenshots
):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    with running_service(models, tmp_path, workers=1, store_url=url) as server:
        open_page(browser, server.url)
        typed(element(browser, "#series"), "store-01")
        typed(element(browser, "#weeks"), "4")
        element(browser, "#levels").click()  # the weeks' change event lays out four rows
        cells = browser.find_elements("css selector", "#plan-table tbody input[name=discount_fraction]")
        assert len(cells) == 4
        typed(cells[2], "45")
        element(browser, "#forecast").click()
        shown = [float(s.get_attribute("data-value")) for s in wait_for(browser, "#answer-table span.units", 4)]
        weeks = [
            {name: 45.0 if (h == 2 and name == "discount_fraction") else 0.0 for name in COVARIATES} for h in range(4)
        ]
        answer = server.post("/forecast", json={"series": [{"id": "store-01", "weeks": weeks}], "levels": [0.8, 0.95]})
        assert shown == [w["units_sold"] for w in answer.json()["series"][0]["weeks"]]
        assert element(browser, "#plan-chart canvas")  # the history and the forecast with its bands
        screenshots(browser, "plan")

        planned = answer.json()["series"][0]["weeks"]
        sold = [  # what sold, a little off the forecasts
            {"series": "store-01", "week": w["week"], "units_sold": round(w["units_sold"] * (0.93 + 0.05 * h)),
             **weeks[h]}
            for h, w in enumerate(planned)
        ]  # fmt: skip
        assert server.post("/actuals", json={"instances": sold}).status_code == 200
        # the log is written every half second, the served inputs' counts every 5 s
        wait_until(lambda: server.get("/accuracy").json()["drift"]["served"]["inputs"], 20)
        element(browser, "nav button[data-view=accuracy]").click()
        element(browser, "#accuracy-tables table tbody tr")
        element(browser, "#weekly-chart canvas")  # one week ahead, week by week
        typed(element(browser, "#served-series"), "store-01")
        element(browser, "#show-served").click()
        element(browser, "#served-chart canvas")
        assert "drifted" in element(browser, "#drift-table").text or "ok" in element(browser, "#drift-table").text
        browser.execute_script("window.scrollTo(0, 0)")
        screenshots(browser, "accuracy")

        element(browser, "nav button[data-view=registry]").click()
        row = element(browser, "#versions-table tbody tr")
        assert row.text.startswith("v1") and "champion" in row.text
        element(browser, "#history-table tbody tr")
        screenshots(browser, "registry")
        assert console_errors(browser) == []


def wait_for(driver, selector, count):
    found = []

    def enough():
        found[:] = driver.find_elements("css selector", selector)
        return len(found) >= count

    wait_until(enough, 15)
    return found


def test_a_series_the_model_never_saw_is_flagged_on_the_page(models, browser, tmp_path):
    with running_service(models, tmp_path, workers=1) as server:
        open_page(browser, server.url)
        typed(element(browser, "#series"), "a-new-store")
        typed(element(browser, "#prev"), "1200")
        element(browser, "#forecast").click()
        flag = element(browser, "#unknown:not([hidden])")
        assert "a-new-store" in flag.text and "not known to model v1" in flag.text
        assert len(wait_for(browser, "#answer-table span.units", 8)) == 8


def test_a_plan_uploaded_as_csv_fills_the_table_and_gives_the_numbers_of_forecast(models, browser, tmp_path):
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "series,week,discount_fraction,weeks_to_next_holidays,note\n"
        'store-02,2024-03-04,10,3,"a note, with a comma"\nstore-02,2024-03-11,55,2,\nstore-01,2024-03-04,0,1,\n'
    )
    with running_service(models, tmp_path, workers=1) as server:
        open_page(browser, server.url)
        element(browser, "#plan-file").send_keys(str(plan))
        wait_until(lambda: element(browser, "#series").get_attribute("value") == "store-02")
        element(browser, "#forecast").click()
        shown = [float(s.get_attribute("data-value")) for s in wait_for(browser, "#answer-table span.units", 2)]
        weeks = [{"discount_fraction": 10.0, "weeks_to_next_holidays": 3.0},
                 {"discount_fraction": 55.0, "weeks_to_next_holidays": 2.0}]  # fmt: skip
        body = {"series": [{"id": "store-02", "week": "2024-03-04", "weeks": weeks}], "levels": [0.8, 0.95]}
        answer = server.post("/forecast", json=body).json()
        assert shown == [w["units_sold"] for w in answer["series"][0]["weeks"]]
        assert [w["week"] for w in answer["series"][0]["weeks"]] == ["2024-03-04", "2024-03-11"]


def test_a_token_protected_service_refuses_the_page_without_its_token(models, browser, tmp_path, screenshots):
    with running_service(models, tmp_path, workers=1, api_token="page-secret") as server:
        assert requests.get(server.url + "/ui", timeout=10).status_code == 401
        assert requests.get(server.url + "/ui/data/overview", timeout=10).status_code == 401
        browser.delete_all_cookies()
        browser.get(server.url + "/ui")
        assert "needs its token" in element(browser, "#refused").text
        screenshots(browser, "sign-in")
        typed(element(browser, "#token"), "wrong")
        element(browser, "button[type=submit]").click()
        wait_until(lambda: "not accepted" in text_of(browser, "#refused"))
        typed(element(browser, "#token"), "page-secret")
        element(browser, "button[type=submit]").click()
        element(browser, "body[data-ready=true]")
        assert element(browser, "#model").text == "serving model v1"
        held = browser.get_cookie("demand_token")
        assert held["httpOnly"] and "page-secret" not in held["value"]  # what the browser keeps is not the token
        browser.delete_all_cookies()
    assert json.loads(Registry(models).history_file.read_text().splitlines()[0])["version"] == "v1"
