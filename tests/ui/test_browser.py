"""What users see, checked in a real browser: the MLflow UI plays each layer's mask and
survival histogram with its step slider, and optuna-dashboard calls a *feasible* trial
the best one.

Stores come from a tiny real run and a real ``dpap search``; ``mlflow server`` and
``optuna-dashboard`` serve them on loopback; Debian's ``chromium`` and ``chromium-driver``
drive the pages through Selenium (``bash tools/setup_test_services.sh`` installs them;
without them these tests are skipped: tests/conftest.py).
Set ``DPAP_SCREENSHOTS=<dir>`` to keep the pages' screenshots (docs/images come from it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

BIN = Path(sys.executable).parent
EPOCHS = 3
PARAMS = """\
data: {{name: digits, processed_dir: {processed}}}
model: {{arch: 8C3-AP2-32FC-10FC, time_steps: 2}}
train: {{epochs: {epochs}, batch_size: 100, threads: 1, lr: 0.01}}
pruning: {{dpap: {{epsilon: 1.4, max_death_share: 0.2, fc: {{beta: 1.0, eta: 10.0}}, conv: {{beta: 1.0}}}}}}
search:
  target: 0.3
  tolerance: 0.1
  trials: 3
  storage: {storage}
"""


def _env(uri: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    e.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}")
    return e


def _free_port() -> int:
    """An ephemeral loopback port (high ports: none is on Chromium's unsafe-port list)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(cmd: list[str], url: str, log: Path, env: dict[str, str], timeout: float = 240):
    """Run a web server until ``url`` answers 200; stop it afterwards."""
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if p.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited ({p.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield
    finally:
        os.killpg(p.pid, 15)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A real DPAP run (MLflow, 3 epochs) and a real 3-trial search (Optuna journal and
    MLflow child runs), plus one planted trial: the most accurate of all, infeasible."""
    import optuna
    from mlflow.tracking import MlflowClient

    from dpap.config import DataConfig, load_params
    from dpap.data import download, load_processed, preprocess
    from dpap.search import UNMEASURED_VIOLATION, is_feasible
    from dpap.tracking import MlflowCallback
    from dpap.training.loop import fit

    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    dc = DataConfig(name="digits", raw_dir=str(root / "raw"), processed_dir=str(root / "processed"), limit=300)
    download(dc)
    preprocess(dc)
    storage = root / "search" / "optuna.journal"
    params = root / "params.yaml"
    params.write_text(PARAMS.format(processed=root / "processed", epochs=EPOCHS, storage=storage))
    cfg = load_params(params)
    data = load_processed(root / "processed" / "digits")
    cb = MlflowCallback(tracking_uri=uri, data_hash=data.meta.get("hash", ""), data_dir=root / "processed" / "digits")
    run = fit(cfg, data, callbacks=[cb], progress=False)
    cb.finish(run)

    p = subprocess.run([sys.executable, "-m", "dpap.cli", "search", "--params", str(params), "--quiet"], cwd=root, env=_env(uri), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    study = optuna.load_study(study_name=cfg.search.study_name, storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage))))
    feasible = [t for t in study.trials if is_feasible(t)]
    assert feasible, "the tiny search should find a feasible trial"
    template = feasible[0]
    planted = optuna.trial.create_trial(
        value=1.0,  # more accurate than any real trial ...
        params=template.params,
        distributions=template.distributions,
        user_attrs={"compression": 0.95, "planted": True},
        system_attrs={"constraints": [UNMEASURED_VIOLATION / 2]},  # ... but infeasible
    )
    study.add_trial(planted)
    best = max(feasible, key=lambda t: t.value)
    run_id = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("dpap").experiment_id])[0].info.run_id
    return {"root": root, "uri": uri, "storage": storage, "run_id": run_id, "best": best.number, "planted": len(study.trials) - 1}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through Selenium. A machine without it skips the tests that use
    this fixture before anything runs (tests/conftest.py); nothing is installed here.
    Its profile, crash reports and caches stay in a tmp folder (not in ~/.config,
    ~/.cache)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium not installed (pytest installs nothing); run: bash tools/setup_test_services.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path_factory.mktemp("chromium-home")
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1200",
              f"--user-data-dir={home / 'profile'}", "--disable-crash-reporter", "--no-first-run"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver"), env=env), options=opts)
    yield driver
    driver.quit()


def _shot(driver, name: str, tmp_path: Path) -> None:
    driver.save_screenshot(str(tmp_path / name))
    keep = os.environ.get("DPAP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(keep) / name)


def _wait(driver, cond, what: str, timeout: float = 120):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: cond(d))
    except TimeoutException:
        raise AssertionError(f"page never showed {what}; it shows:\n{driver.find_element('tag name', 'body').text[:2000]}") from None


def test_mlflow_run_page_plays_masks_and_histograms_by_epoch(stores, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = _free_port()
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", stores["uri"], "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with serve(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "mlflow.log", _env(stores["uri"])):
        browser.get(f"http://127.0.0.1:{port}/#/experiments/1/runs/{stores['run_id']}/model-metrics")
        box = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder='Search metric charts']"), "the chart search box")[0]
        # the scalar charts come in sections (train/, test/, pruning/, layers/...)
        _wait(browser, lambda d: re.search(r"pruning\s*\(\d+\)", d.find_element(By.TAG_NAME, "body").text), "a 'pruning (n)' section")
        for key, cards in (("masks", ["masks/layer0_conv", "masks/layer1_fc", "masks/layer2_fc"]),
                           ("survival", ["survival/layer0_conv_units", "survival/layer1_fc_synapses", "survival/layer1_fc_units"])):
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(key)
            _wait(browser, lambda d: all(d.find_elements(By.CSS_SELECTOR, f"h4[title='{c}']") for c in cards), f"the image cards {cards}")
            body = browser.find_element(By.TAG_NAME, "body").text
            assert re.search(rf"{key}\s*\({len(cards)}\)", body), body[:1500]
            for title in cards:
                card = browser.find_element(By.XPATH, f"//h4[@title='{title}']/ancestor::div[@data-testid='experiment-view-compare-runs-card']")
                # the card's step slider spans the epochs, 1 .. EPOCHS
                slider = card.find_element(By.CSS_SELECTOR, "[role=slider]")
                assert (slider.get_attribute("aria-valuemin"), slider.get_attribute("aria-valuemax")) == ("1", str(EPOCHS)), title
                # play it to the last epoch: the picture logged for that step loads
                browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus()", slider)
                for _ in range(EPOCHS):
                    slider.send_keys(Keys.ARROW_RIGHT)
                _wait(browser, lambda d: slider.get_attribute("aria-valuenow") == str(EPOCHS), f"{title}'s slider at step {EPOCHS}")
                want = f"{title.replace('/', '~')}+step+{EPOCHS}+"

                def loaded(d, card=card, want=want):
                    for img in card.find_elements(By.TAG_NAME, "img"):
                        src = urllib.request.unquote(img.get_attribute("src") or "")
                        if want in src and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
                            return img
                    return None

                img = _wait(browser, loaded, f"the image {want}… loaded")
                assert img.size["width"] > 100, img.size
            _shot(browser, f"mlflow_{key}.png", tmp_path)


def _best_trial_number(driver):
    """``(number,)`` once the Best Trial card shows (a tuple: trial 0 must not read as 'not yet')."""
    m = re.search(r"Best Trial \(number=(\d+)\)", driver.find_element("tag name", "body").text)
    return (int(m.group(1)),) if m else None


def test_dashboard_calls_a_feasible_trial_best(stores, browser, tmp_path):
    """``dpap dashboard`` (optuna-dashboard's own app, over a storage whose best trial is the
    best feasible one: plain optuna-dashboard's Best Trial card would show the planted one)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "dpap.cli", "dashboard", "--storage", str(stores["storage"]), "--port", str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/dashboard", tmp_path / "dashboard.log", _env(stores["uri"])):
        # the API serves the planted trial's constraint (the dashboard reads it from here)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
            (study_id,) = [s["study_id"] for s in json.loads(r.read())["study_summaries"]]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}") as r:
            trials = json.loads(r.read())["trials"]
        assert trials[stores["planted"]]["constraints"] == [pytest.approx(0.5)]
        browser.get(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}")
        (number,) = _wait(browser, _best_trial_number, "'Best Trial (number=…)'")
        assert number == stores["best"], f"dashboard's best trial {number}, best feasible {stores['best']}, planted infeasible {stores['planted']}"
        assert number != stores["planted"]
        card = browser.find_element("xpath", "//*[starts-with(normalize-space(text()), 'Best Trial (number=')]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
        time.sleep(1)
        _shot(browser, "optuna_dashboard.png", tmp_path)
