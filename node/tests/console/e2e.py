"""The web console in a real browser: headless Chromium (Debian's) driven by Playwright.

Started by node/tests/console.rs, which runs a Keelson node (identity enforced, test clock) and
a private dockerd and passes them in the environment:
  KEELSON_URL      http://127.0.0.1:<port>
  ADMIN_TOKEN      the cluster administrator's token (keelson/admin)
  DOCKER           the docker CLI; DOCKER_HOST the private daemon
  DOCKER_LOCAL     a local image (imported busybox root filesystem) to push
  WORK             a scratch directory; SCREENSHOTS where page screenshots go
Each step asserts what a user would see; a failure raises with the step's name. Nothing sleeps:
Playwright's expectations poll until they hold or time out.
"""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

URL = os.environ["KEELSON_URL"]
HOST = URL.split("://", 1)[1]
ADMIN = ("keelson/admin", os.environ["ADMIN_TOKEN"])
DOCKER = os.environ["DOCKER"]
LOCAL = os.environ["DOCKER_LOCAL"]
WORK = os.environ["WORK"]
SHOTS = os.environ["SCREENSHOTS"]
ADVISORY = os.environ["ADVISORY"]
expect.set_options(timeout=20_000)


def step(name):
    print(f"--- {name}", flush=True)


def call(method, path, body=None, creds=ADMIN, expect_status=None):
    """The management or registry API with Basic credentials (or anonymous): (status, json)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    if creds:
        raw = f"{creds[0]}:{creds[1]}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(raw).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    req.add_header(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if expect_status is not None and status != expect_status:
        raise AssertionError(f"{method} {path}: {status} (wanted {expect_status}): {text}")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def docker(config, *args, ok=True, stdin=None):
    env = dict(os.environ, DOCKER_CONFIG=os.path.join(WORK, config))
    os.makedirs(env["DOCKER_CONFIG"], exist_ok=True)
    out = subprocess.run([DOCKER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=180)
    if ok and out.returncode != 0:
        raise AssertionError(f"docker {args}: {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def wait_for(what, check, limit=60.0):
    """Polls `check` until it holds (a deadline, not a sleep standing in for a condition)."""
    import time
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {limit} s")
        time.sleep(0.1)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def sign_in(page, user, token):
    """Signs in with the keyboard only: type, Tab, type, Enter."""
    page.goto(URL + "/console/")
    expect(page.get_by_role("heading", name="Sign in to Keelson")).to_be_visible()
    page.get_by_label("Username").focus()
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def pulls_of(page, digest):
    return page.locator(f'tr[data-digest="{digest}"] td.pulls')


def main():
    os.makedirs(SHOTS, exist_ok=True)
    step("tenancy, users, a read-only group and tokens through the API")
    call("POST", "/api/v1/tenancies", {"namespace": "acme"}, expect_status=201)
    for user in ("ann", "rob"):
        call("POST", "/api/v1/tenancies/acme/users", {"name": user}, expect_status=201)
    call("PUT", "/api/v1/tenancies/acme/groups/Administrators/members/ann", expect_status=200)
    call("POST", "/api/v1/tenancies/acme/groups", {"name": "Readers"}, expect_status=201)
    call("PUT", "/api/v1/tenancies/acme/groups/Readers/members/rob", expect_status=200)
    call("PUT", "/api/v1/tenancies/acme/policies/readers",
         {"statements": ["allow group Readers to read repos in tenancy"]}, expect_status=200)
    _, ann = call("POST", "/api/v1/tenancies/acme/users/ann/tokens", {"description": "setup"}, expect_status=201)
    _, rob = call("POST", "/api/v1/tenancies/acme/users/rob/tokens", {"description": "setup"}, expect_status=201)
    ann_creds = ("acme/ann", ann["token"])

    step("docker pushes an image as ann")
    docker("ann", "login", HOST, "-u", "acme/ann", "--password-stdin", stdin=ann["token"])
    web = f"{HOST}/acme/app/web:v1"
    docker("ann", "tag", LOCAL, web)
    pushed = docker("ann", "push", web).stdout
    digest = next(l.split("digest: ")[1].split()[0] for l in pushed.splitlines() if "digest: " in l)

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        step("sign in with the keyboard; the tenancy lists the pushed repository")
        sign_in(page, "acme/ann", ann["token"])
        expect(page.get_by_role("heading", name="Repositories in acme")).to_be_visible()
        row = page.get_by_role("row").filter(has_text="acme/app/web")
        expect(row).to_contain_text("private")
        shot(page, "tenancy")

        step("the repository and its image; a docker pull raises the count")
        page.get_by_role("link", name="acme/app/web").click()
        expect(page.get_by_role("heading", name="acme/app/web")).to_be_visible()
        expect(pulls_of(page, digest)).to_have_text("0")
        expect(page.locator("#pull-command")).to_have_text(f"docker pull {HOST}/acme/app/web:v1")
        docker("ann", "rmi", web)
        docker("ann", "pull", web)
        call("POST", "/api/v1/cluster/pulls/flush", expect_status=200)
        page.reload()
        expect(pulls_of(page, digest)).to_have_text("1")
        shot(page, "repository")

        step("the image page shows layers and platforms")
        page.locator(f'tr[data-digest="{digest}"] a').first.click()
        expect(page.get_by_role("heading", name=f"acme/app/web@{digest}")).to_be_visible()
        expect(page.get_by_role("table", name="Layers").get_by_role("row")).to_have_count(2)
        expect(page.locator("#image-pulls")).to_have_text("1")
        shot(page, "image")

        step("supply chain: the image's findings, then its signature by a key the cluster holds")
        vulns = f"/api/v1/repos/acme/app/web/images/{digest}/vulnerabilities"
        wait_for("the pushed image inventoried", lambda: call("GET", vulns)[1].get("state") == "scanned")
        page.reload()
        expect(page.locator("#scan-state")).to_contain_text("1 finding")
        finding = page.get_by_role("table", name="Vulnerabilities").locator(f'tr[data-advisory="{ADVISORY}"]')
        expect(finding).to_contain_text("lodash (npm)")
        expect(finding).to_contain_text("4.17.20")
        expect(finding).to_contain_text("4.17.21")
        expect(finding).to_contain_text("high")
        expect(page.locator('#vulnerabilities [data-severity="high"]')).to_have_text("1 high")
        expect(page.locator("#signature-state")).to_have_text("unsigned")
        call("PUT", "/api/v1/tenancies/acme/signing-keys/release", {"scope": "tenancy", "generate": True},
             expect_status=201)
        call("POST", f"/api/v1/repos/acme/app/web/images/{digest}/sign", {"key": "release"}, creds=ann_creds,
             expect_status=201)
        page.reload()
        expect(page.locator("#signature-state")).to_have_text("signed")
        expect(page.locator("#signature-keys")).to_contain_text("release")
        shot(page, "image-supply-chain")
        page.get_by_role("link", name="← acme/app/web").click()
        expect(page.locator(f'tr[data-digest="{digest}"] td.signature')).to_have_text("signed")

        step("create a repository, make it public, pull it anonymously")
        page.get_by_role("link", name="Repositories").click()
        page.get_by_label("Repository name (after acme/)").fill("app/demo")
        page.get_by_role("button", name="Create repository").click()
        expect(page.get_by_role("status")).to_contain_text("Created acme/app/demo")
        page.get_by_role("link", name="acme/app/demo").click()
        expect(page.locator("#visibility")).to_have_text("private")
        page.get_by_role("button", name="Make public").click()
        expect(page.locator("#visibility")).to_have_text("public")
        demo = f"{HOST}/acme/app/demo:v1"
        docker("ann", "tag", LOCAL, demo)
        docker("ann", "push", demo)
        docker("ann", "rmi", demo)
        docker("anonymous", "pull", demo)
        call("GET", "/v2/acme/app/demo/manifests/v1", creds=None, expect_status=200)
        call("GET", "/v2/acme/app/web/manifests/v1", creds=None, expect_status=401)

        step("a readme with a script and a hostile description render as text")
        page.reload()
        page.get_by_label("Description", exact=True).fill('<img src=x onerror="window.__xss=1">demo')
        page.get_by_label("Readme (markdown)").fill(
            "# Demo\n\n<script>window.__xss = 2</script>\n\n[click](javascript:window.__xss=3)\n\n"
            "<img src=x onerror=\"window.__xss=4\">"
        )
        page.get_by_role("button", name="Save description and readme").click()
        expect(page.get_by_role("status")).to_contain_text("Saved the description and readme")
        page.reload()
        expect(page.locator("#readme h3")).to_have_text("Demo")
        expect(page.locator("#readme")).to_contain_text("<script>window.__xss = 2</script>")
        expect(page.locator("p.description")).to_have_text('<img src=x onerror="window.__xss=1">demo')
        for path in ("/console/t/acme", "/console/r/acme/app/demo", "/console/t/acme/compartments"):
            page.goto(URL + path)
            expect(page.locator("main h1").first).to_be_visible()
            assert page.locator("main script, main img[src=x], main a[href^=javascript]").count() == 0, path
        page.goto(URL + "/console/r/acme/app/demo")
        page.get_by_role("link", name="click").click()
        assert page.evaluate("window.__xss") is None, "an injected script ran"
        shot(page, "repository-readme")

        step("the page is readable at phone width")
        phone = ctx.new_page()
        phone.set_viewport_size({"width": 390, "height": 844})
        phone.goto(URL + "/console/r/acme/app/web")
        expect(phone.get_by_role("heading", name="acme/app/web")).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 392, f"the page is {width}px wide at phone width"
        shot(phone, "repository-phone")
        phone.close()

        step("delete an image; it is gone and its pull fails")
        page.goto(URL + "/console/r/acme/app/web")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name=f"Delete image {digest.split(':')[0]}:{digest.split(':')[1][:12]}").click()
        expect(page.get_by_role("status")).to_contain_text("Deleted image")
        expect(page.locator(f'tr[data-digest="{digest}"]')).to_have_count(0)
        expect(page.locator("p.empty")).to_contain_text("holds no images")
        docker("ann", "rmi", web)
        failed = docker("ann", "pull", web, ok=False)
        assert failed.returncode != 0, "the deleted image still pulls"

        step("a forged change without the CSRF token is refused")
        status = page.evaluate(
            """async () => (await fetch('/api/v1/repos/acme/app/demo', {method: 'PATCH',
                 headers: {'Content-Type': 'application/json'}, body: '{"public": false}'})).status"""
        )
        assert status == 403, f"a change without the CSRF token answered {status}"
        # Nor can another site sign this browser in as someone else: a form cannot send JSON.
        status = page.evaluate(
            """async () => (await fetch('/console/api/session', {method: 'POST',
                 headers: {'Content-Type': 'text/plain'},
                 body: '{"username": "acme/rob", "token": "x"}'})).status"""
        )
        assert status == 400, f"a sign-in posted as a form answered {status}"
        _, demo_info = call("GET", "/api/v1/repos/acme/app/demo", expect_status=200)
        assert demo_info["public"] is True, demo_info

        step("a policy with a syntax error shows its line and column before saving")
        page.get_by_role("link", name="Administration").click()
        page.get_by_label("Policy name").fill("broken")
        page.locator("#policy-new-text").fill(
            "allow group Readers to read repos in tenancy\nallow group Developers to fly repos in tenancy"
        )
        expect(page.locator("#policy-new-check")).to_contain_text("Line 2, column")
        shot(page, "policy-error")
        page.get_by_role("button", name="Create policy").click()
        expect(page.locator("#policy-new-check")).to_contain_text("Line 2, column")
        _, tenancy = call("GET", "/api/v1/tenancies/acme", expect_status=200)
        assert all(p["name"] != "broken" for p in tenancy["policies"]), tenancy

        step("the administration page shows the tenancy's audit log")
        wait_for("the push in the audit log", lambda: any(
            e["action"] == "manifest.put" and e["actor"] == "acme/ann"
            for e in call("GET", "/api/v1/audit?namespace=acme", expect_status=200)[1]["events"]))
        page.reload()
        audit = page.get_by_role("table", name="Audit log")
        expect(audit).to_contain_text("manifest.put")
        expect(audit).to_contain_text("acme/ann")
        shot(page, "audit")

        step("a new token is shown once and works for docker login")
        page.get_by_role("link", name="Auth tokens").click()
        page.get_by_label("Description", exact=True).fill("laptop")
        page.get_by_role("button", name="Create token").click()
        expect(page.locator("#new-token")).to_be_visible()
        token = page.locator("#new-token").text_content()
        shot(page, "tokens")
        docker("fresh", "login", HOST, "-u", "acme/ann", "--password-stdin", stdin=token)
        page.reload()
        expect(page.get_by_role("table", name="Auth tokens")).to_contain_text("laptop")
        expect(page.locator("#new-token")).to_have_count(0)

        step("a read-only user sees no change actions, and the API refuses them")
        reader_ctx = browser.new_context()
        rpage = reader_ctx.new_page()
        sign_in(rpage, "acme/rob", rob["token"])
        expect(rpage.get_by_role("link", name="acme/app/demo")).to_be_visible()
        expect(rpage.get_by_role("form", name="Create repository")).to_have_count(0)
        rpage.get_by_role("link", name="acme/app/demo").click()
        expect(rpage.get_by_role("heading", name="acme/app/demo")).to_be_visible()
        expect(rpage.get_by_role("button", name="Make private")).to_have_count(0)
        expect(rpage.get_by_role("button", name="Delete image")).to_have_count(0)
        expect(rpage.locator("#repo-settings")).to_have_count(0)
        status = rpage.evaluate(
            """async () => { const s = await (await fetch('/console/api/session')).json();
                 return (await fetch('/api/v1/repos/acme/app/demo', {method: 'PATCH',
                   headers: {'Content-Type': 'application/json', 'X-Keelson-CSRF': s.csrf},
                   body: '{"public": false}'})).status; }"""
        )
        assert status == 403, f"a read-only user's change answered {status}"
        shot(rpage, "read-only")

        step("the cluster administrator's cluster page")
        admin_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        apage = admin_ctx.new_page()
        sign_in(apage, *ADMIN)
        apage.get_by_role("link", name="Cluster", exact=True).click()
        expect(apage.get_by_role("heading", name="Cluster", exact=True)).to_be_visible()
        expect(apage.get_by_role("table", name="Members").get_by_role("row")).to_have_count(2)
        shot(apage, "cluster")

        step("sign out")
        apage.get_by_role("button", name="Sign out").click()
        expect(apage.get_by_role("status")).to_contain_text("You are signed out")
        apage.goto(URL + "/console/cluster")
        expect(apage.get_by_role("heading", name="Sign in to Keelson")).to_be_visible()

        step("the session expires on the registry's clock")
        call("PUT", "/api/v1/cluster/clock", {"offset_ms": 9 * 3600 * 1000}, expect_status=200)
        page.goto(URL + "/console/t/acme")
        expect(page.get_by_role("heading", name="Sign in to Keelson")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("session expired")

        assert not errors, f"script errors in the page: {errors}"
        browser.close()
    print("console e2e: all steps passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the harness prints our output; make the failure the last line
        print(f"FAILED: {e!r}", file=sys.stderr)
        raise
