#!/usr/bin/env python3
"""Drives the /dashboard page of a running `weir serve` in headless Chromium.

Run by Tests/WeirServerTests/DashboardBrowserTests.swift, which starts the server:

    WEIR_DASHBOARD_TOKEN=... dashboard_test.py --base-url http://127.0.0.1:PORT \
        --chromium /usr/bin/chromium --chromedriver /usr/bin/chromedriver \
        --screenshot artifacts/dashboard.png

Checks: a wrong token is refused (by the page and by the stream endpoint); signing in
keeps the token in sessionStorage, never in the URL; traffic sent to /v1/acquire moves
the bars and the refusals chart; sorting and search; a recharge, a tier pin and an
override made on the page (each confirmed in its dialog) show in the next update.
Exits 0 when every check passes, 1 with the failing check otherwise. Every wait is
bounded (15 s).
"""
import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_SECONDS = 15
RULE = "text-minimax-m2-stable"


def log(message):
    print("dashboard_test: " + message, flush=True)


class Server:
    def __init__(self, base_url, token):
        self.base_url = base_url
        self.token = token

    def call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def acquire(self, account, count, api="text", model="MiniMax-M2-Stable", units=0):
        statuses = []
        for _ in range(count):
            body = {"account": account, "api": api, "model": model, "units": units}
            status, _ = self.call("POST", "/v1/acquire", body)
            statuses.append(status)
        return statuses


def expect(condition, message):
    if not condition:
        raise AssertionError(message)
    log("ok: " + message)


def wait_for(driver, description, predicate):
    """Waits until predicate(driver) is truthy (at most WAIT_SECONDS); returns its value."""
    try:
        value = WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(lambda d: predicate(d))
    except TimeoutException:
        raise AssertionError("timed out waiting for: " + description)
    log("ok: " + description)
    return value


# The page re-renders every second, so reads go through one script call (atomic in the
# page) rather than element handles that a re-render makes stale.
STATE_SCRIPT = """
const accounts = {};
const order = [];
for (const card of document.querySelectorAll('#accounts .account')) {
  const id = card.dataset.account;
  order.push(id);
  const svg = card.querySelector('svg.refusals');
  accounts[id] = {
    tier: card.querySelector('.tier').dataset.tier,
    limits: Array.from(card.querySelectorAll('.limit')).map((row) => ({
      rule: row.dataset.rule, model: row.dataset.model, dimension: row.dataset.dimension,
      used: Number(row.dataset.used), limit: Number(row.dataset.limit),
      classes: row.className.split(' '), text: row.textContent })),
    chart: { total: Number(svg.dataset.total), rects: svg.querySelectorAll('rect.requests').length,
             reasons: Array.from(new Set(Array.from(svg.querySelectorAll('rect')).map((r) => r.getAttribute('class')))).sort() },
  };
}
return { order: order, accounts: accounts };
"""


def page_state(driver):
    return driver.execute_script(STATE_SCRIPT)


def account(driver, name):
    return page_state(driver)["accounts"].get(name)


def limit_row(driver, name, dimension="requests", rule=RULE, model="MiniMax-M2-Stable"):
    state = account(driver, name)
    if state is None:
        return None
    for row in state["limits"]:
        if row["rule"] == rule and row["model"] == model and row["dimension"] == dimension:
            return row
    return None


def chart(driver, name):
    state = account(driver, name)
    return None if state is None else state["chart"]


def tier(driver, name):
    state = account(driver, name)
    return None if state is None else state["tier"]


def order(driver):
    return page_state(driver)["order"]


def click_action(driver, name, action):
    """Clicks an account's action button, finding it again if a re-render replaced it."""
    for _ in range(10):
        try:
            for node in driver.find_elements(By.CSS_SELECTOR, "#accounts .account"):
                if node.get_attribute("data-account") == name:
                    node.find_element(By.CSS_SELECTOR, "button." + action).click()
                    return
            raise AssertionError("no card for account " + name)
        except StaleElementReferenceException:
            continue
    raise AssertionError("could not click %s of %s" % (action, name))


def session_token(driver):
    return driver.execute_script("return sessionStorage.getItem('weir.adminToken');")


def confirm_dialog(driver, expected_summary):
    dialog = driver.find_element(By.ID, "action-dialog")
    wait_for(driver, "the action dialog opens", lambda d: dialog.get_attribute("open") is not None)
    summary = driver.find_element(By.ID, "action-summary").text
    expect(expected_summary in summary, "the dialog asks to confirm: " + summary)
    driver.find_element(By.ID, "action-confirm").click()
    wait_for(driver, "the dialog closes after the confirmed action",
             lambda d: dialog.get_attribute("open") is None)


def run(driver, server, screenshot):
    token = server.token
    driver.get(server.base_url + "/dashboard")
    wait_for(driver, "the sign-in form is shown", lambda d: d.find_element(By.ID, "token").is_displayed())

    # A wrong token is refused: by the page, and by the endpoints it uses.
    driver.find_element(By.ID, "token").send_keys("not-the-admin-token")
    driver.find_element(By.ID, "login-button").click()
    error = wait_for(driver, "the page refuses a wrong token",
                     lambda d: d.find_element(By.ID, "login-error").is_displayed() and d.find_element(By.ID, "login-error"))
    expect("wrong admin token" in error.text, "the refusal says why: " + error.text)
    expect(not driver.find_element(By.ID, "main").is_displayed(), "no dashboard for a wrong token")
    expect(session_token(driver) is None, "a refused token is not kept")
    status, _ = server.call("GET", "/admin/v1/usage/stream", token="not-the-admin-token")
    expect(status == 401, "the usage stream answers 401 to a wrong token (got %d)" % status)
    status, _ = server.call("GET", "/admin/v1/usage/stream")
    expect(status == 401, "the usage stream answers 401 without a token (got %d)" % status)

    # Accounts: one in the registry, two known from traffic only.
    status, _ = server.call("PUT", "/admin/v1/accounts/acme", {}, token=token)
    expect(status in (200, 201), "account acme created through the admin API")

    driver.find_element(By.ID, "token").clear()
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-button").click()
    wait_for(driver, "the dashboard is shown after sign-in", lambda d: d.find_element(By.ID, "main").is_displayed())
    expect(token not in driver.current_url, "the token is not in the URL")
    expect(session_token(driver) == token, "the token is kept in sessionStorage")
    driver.find_element(By.ID, "show-idle").click()
    before = wait_for(driver, "acme's requests bar reads 0 / 20",
                      lambda d: (lambda r: r if r and r["used"] == 0 and r["limit"] == 20 else None)(limit_row(d, "acme")))
    expect("ok" in before["classes"], "an idle limit is not coloured")
    expect(chart(driver, "acme")["total"] == 0, "no refusal charted before any traffic")

    # Traffic: acme goes over its 20 RPM, zeta near it, walk-in barely uses it.
    statuses = server.acquire("acme", 25)
    expect(statuses.count(200) == 20 and statuses.count(429) == 5, "acme: 20 allowed, 5 refused")
    expect(server.acquire("zeta", 17).count(200) == 17, "zeta: 17 allowed")
    expect(server.acquire("walk-in", 3).count(200) == 3, "walk-in: 3 allowed")
    # studio: text-to-speech characters near the 20,000 limit, one refused for tokens,
    # and an image request too large to ever pass.
    expect(server.acquire("studio", 1, api="t2a", model="speech-2.6-hd", units=18000) == [200], "studio: 18,000 characters allowed")
    expect(server.acquire("studio", 2, api="t2a", model="speech-2.6-hd", units=5000) == [429, 429], "studio: 2 refused for tokens")
    expect(server.acquire("studio", 1, api="image-generation", model="image-01", units=100) == [429], "studio: 1 refused as too large")

    after = wait_for(driver, "acme's bar moves to 20 / 20, coloured over the limit",
                     lambda d: (lambda r: r if r and r["used"] == 20 and "over" in r["classes"] else None)(limit_row(d, "acme")))
    expect(after["limit"] == 20, "acme's limit is still 20")
    refusals = wait_for(driver, "acme's refusals chart shows the 5 refusals",
                        lambda d: (lambda c: c if c and c["total"] == 5 else None)(chart(d, "acme")))
    expect(refusals["rects"] >= 1, "the chart draws a bar for the requests refusals")
    zeta = wait_for(driver, "zeta's bar reads 17 / 20, coloured near the limit",
                    lambda d: (lambda r: r if r and r["used"] == 17 else None)(limit_row(d, "zeta")))
    expect("near" in zeta["classes"], "zeta's bar is coloured near")
    walk_in = wait_for(driver, "walk-in (known from traffic only) is listed with 3 / 20",
                       lambda d: (lambda r: r if r and r["used"] == 3 else None)(limit_row(d, "walk-in")))
    expect("ok" in walk_in["classes"], "walk-in's bar is not coloured")
    studio = wait_for(driver, "studio's text-to-speech tokens bar reads 18000 / 20000, near the limit",
                      lambda d: (lambda r: r if r and r["used"] == 18000 and r["limit"] == 20000 else None)(
                          limit_row(d, "studio", dimension="tokens", rule="t2a", model="speech-2.6-hd")))
    expect("near" in studio["classes"], "studio's tokens bar is coloured near")
    wait_for(driver, "studio's chart stacks tokens and too-large refusals",
             lambda d: (lambda c: c and c["total"] == 3 and c["reasons"] == ["tokens", "too_large"])(chart(d, "studio")))

    # Sorting and search.
    wait_for(driver, "sorted closest to a limit first: acme, studio, zeta, walk-in",
             lambda d: order(d) == ["acme", "studio", "zeta", "walk-in"])
    Select(driver.find_element(By.ID, "sort")).select_by_value("name")
    wait_for(driver, "sorted by name: acme, studio, walk-in, zeta", lambda d: order(d) == ["acme", "studio", "walk-in", "zeta"])
    Select(driver.find_element(By.ID, "sort")).select_by_value("refusals")
    wait_for(driver, "sorted by refusals: acme (5), studio (3), then the closest", lambda d: order(d) == ["acme", "studio", "zeta", "walk-in"])
    Select(driver.find_element(By.ID, "sort")).select_by_value("closest")
    driver.find_element(By.ID, "search").send_keys("walk")
    wait_for(driver, "the search box keeps only walk-in", lambda d: order(d) == ["walk-in"])
    driver.find_element(By.ID, "search").clear()
    driver.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
    wait_for(driver, "clearing the search shows every account again", lambda d: len(order(d)) == 4)
    driver.find_element(By.ID, "show-idle").click()  # fold idle limits away again
    wait_for(driver, "idle limits folded: acme shows only limits in use",
             lambda d: all(row["used"] > 0 for row in account(d, "acme")["limits"]))
    if screenshot:
        os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
        driver.save_screenshot(screenshot)
        log("screenshot saved: " + screenshot)

    # Live updates: the page follows the stream without a reload.
    sequence = int(driver.find_element(By.ID, "summary").get_attribute("data-sequence"))
    wait_for(driver, "a later update arrives without a reload",
             lambda d: int(d.find_element(By.ID, "summary").get_attribute("data-sequence")) > sequence)

    # A cancelled action changes nothing.
    click_action(driver, "acme", "recharge")
    wait_for(driver, "the recharge dialog opens", lambda d: d.find_element(By.ID, "action-dialog").get_attribute("open") is not None)
    driver.find_element(By.ID, "action-cancel").click()
    status, body = server.call("GET", "/admin/v1/accounts/acme", token=token)
    expect(json.loads(body)["recharges"] == 0, "cancelling the dialog records no recharge")

    # Recharge from the page: acme moves to the paid tier, its limit rises to 500.
    click_action(driver, "acme", "recharge")
    amount = driver.find_element(By.ID, "action-amount")
    amount.clear()
    amount.send_keys("10")
    confirm_dialog(driver, "Recharge acme by 10")
    raised = wait_for(driver, "the recharge raises acme's limit shown to 500",
                      lambda d: (lambda r: r if r and r["limit"] == 500 else None)(limit_row(d, "acme")))
    expect(raised["used"] == 20, "the recharge keeps the usage (20 used)")
    expect(tier(driver, "acme") == "paid", "acme is shown in the paid tier")

    # Pin a tier: back to free, whatever the recharges.
    click_action(driver, "acme", "pin")
    Select(driver.find_element(By.ID, "action-tier")).select_by_value("free")
    confirm_dialog(driver, "Pin acme to the free tier")
    wait_for(driver, "the pin brings acme's limit back to 20",
             lambda d: (lambda r: r if r and r["limit"] == 20 else None)(limit_row(d, "acme")))
    expect(tier(driver, "acme") == "free", "acme is shown in the free tier")

    # Override: 77 requests per minute on acme's MiniMax-M2-Stable.
    click_action(driver, "acme", "override")
    Select(driver.find_element(By.ID, "action-rule")).select_by_value(RULE)
    Select(driver.find_element(By.ID, "action-model")).select_by_value("MiniMax-M2-Stable")
    Select(driver.find_element(By.ID, "action-dimension")).select_by_value("requests")
    value = driver.find_element(By.ID, "action-limit")
    value.clear()
    value.send_keys("77")
    confirm_dialog(driver, "Set requests = 77 for acme")
    wait_for(driver, "the override sets acme's limit shown to 77",
             lambda d: (lambda r: r if r and r["limit"] == 77 else None)(limit_row(d, "acme")))

    # An action on an account known from traffic only creates it first.
    click_action(driver, "walk-in", "recharge")
    confirm_dialog(driver, "created in the registry first")
    wait_for(driver, "walk-in is recharged into the paid tier", lambda d: tier(d, "walk-in") == "paid")

    # The session survives a reload; signing out forgets the token.
    driver.refresh()
    wait_for(driver, "a reload signs in again from sessionStorage", lambda d: d.find_element(By.ID, "main").is_displayed())
    wait_for(driver, "the accounts are back after the reload", lambda d: account(d, "acme") is not None)
    driver.find_element(By.ID, "logout").click()
    wait_for(driver, "signing out shows the sign-in form", lambda d: d.find_element(By.ID, "login").is_displayed())
    expect(session_token(driver) is None, "signing out removes the token from sessionStorage")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--screenshot")
    arguments = parser.parse_args()
    token = os.environ.get("WEIR_DASHBOARD_TOKEN")
    if not token:
        print("dashboard_test: set WEIR_DASHBOARD_TOKEN to the server's admin token", file=sys.stderr)
        return 2

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network
    profile = tempfile.mkdtemp(prefix="weir-chromium-")
    options = Options()
    options.binary_location = arguments.chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--user-data-dir=" + profile]:
        options.add_argument(flag)
    service = Service(executable_path=arguments.chromedriver)
    started = time.monotonic()
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT_SECONDS)
        run(driver, Server(arguments.base_url, token), arguments.screenshot)
    except AssertionError as failure:
        log("FAILED: %s" % failure)
        try:
            log("page state: " + json.dumps(page_state(driver))[:6000])
            for entry in driver.get_log("browser"):
                log("browser console: %s" % entry)
        except Exception:
            pass
        return 1
    finally:
        driver.quit()
    log("all checks passed in %.1f s" % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
