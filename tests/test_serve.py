"""`hitgan serve`: the API's images and refusals, requests that never wait behind the generator,
the load test (bench/serve_load.py) at toy size, and the page in headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics import visible_generator

from bench import serve_load
from bench.serve_load import fetch, serving
from hitgan.data.images import to_uint8
from hitgan.models.io import save_pretrained
from hitgan.sampling import inference_fn, interpolation_path, seed_latent, seed_latents
from hitgan.serve import MAX_SEED, Sampler, SamplerServer, device_forward, serving_precision

LATENT = 64  # hit-tiny-32


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    return visible_generator()


@pytest.fixture(scope="module")
def model_dir(generator, tmp_path_factory) -> Path:
    return save_pretrained(generator, tmp_path_factory.mktemp("serve") / "model")


def _start(sampler: Sampler) -> tuple[SamplerServer, threading.Thread]:
    server = SamplerServer(("127.0.0.1", 0), sampler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server: SamplerServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def url(generator) -> Iterator[str]:
    """The server in this process, on a free loopback port."""
    server, thread = _start(Sampler(inference_fn(generator), LATENT, {"model": "test"}))
    yield server.url
    _stop(server, thread)


def _png(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def test_images_are_the_seeds_images(url, generator):
    status, body, _ = fetch(url + "api/image?seed=3&trunc=0.5")
    assert status == 200
    with torch.inference_mode():
        expected = to_uint8(generator(seed_latent(3, LATENT, 0.5)[None]))[0]
    np.testing.assert_array_equal(_png(body), expected)

    status, body, _ = fetch(url + "api/grid?start=2&count=5&trunc=0.5")
    grid = _png(body)
    assert status == 200 and grid.shape == (2 * 34 - 2, 3 * 34 - 2, 3)  # 3 columns, 2 px pad
    np.testing.assert_array_equal(grid[:32, 34:66], expected)  # the second image: seed 3

    status, body, _ = fetch(url + "api/interpolation?from=0&to=1&frames=4")
    strip = _png(body)
    with torch.inference_mode():
        frames = to_uint8(generator(interpolation_path(seed_latents([0, 1], LATENT), 4)))
    assert status == 200 and strip.shape == (32, 4 * 34 - 2, 3)
    np.testing.assert_array_equal(strip[:, 3 * 34:], frames[3])

    status, body, _ = fetch(url + "api/info")
    info = json.loads(body)
    assert status == 200 and info["model"] == "test" and info["max_seed"] == MAX_SEED


@pytest.mark.parametrize(("path", "status", "message"), [
    ("api/image?seed=-1", 400, "seed=-1: out of range; use 0..4294967295"),
    ("api/image?seed=4294967296", 400, "out of range"),
    ("api/image?seed=abc", 400, "seed='abc': not an integer"),
    ("api/image?seed=1e3", 400, "not an integer"),
    ("api/image", 400, "missing parameter 'seed'"),
    ("api/image?seed=1&seed=2", 400, "given 2 times"),
    ("api/image?seed=1&path=/etc/passwd", 400, "unknown parameter 'path'"),
    ("api/image?seed=1&trunc=nan", 400, "trunc=nan: out of range"),
    ("api/image?seed=1&trunc=0", 400, "out of range"),
    ("api/image?seed=1&trunc=x", 400, "not a number"),
    ("api/grid?start=0&count=100000", 400, "count=100000: out of range; use 1..64"),
    ("api/grid?start=4294967290&count=10", 400, "start=4294967290: out of range"),
    ("api/interpolation?from=0&to=1&frames=1000", 400, "frames=1000: out of range"),
    ("../../etc/passwd", 404, "no such page"),
    ("api/model", 404, "no such page"),
])
def test_bad_requests_get_4xx_with_a_message(url, path, status, message):
    got, body, _ = fetch(url + path)
    assert got == status and message in json.loads(body)["error"]
    assert fetch(url + "api/image?seed=0")[0] == 200  # and the server goes on


def test_only_get_is_allowed(url):
    request = urllib.request.Request(url + "api/info", data=b"{}", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(request, timeout=30)
    assert e.value.code == 405 and "use GET" in json.loads(e.value.read())["error"]


def _poll(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_requests_do_not_wait_behind_the_generator(generator):
    """While the generator runs one request, the page and the API's info answer at once, and
    the image requests that arrive meanwhile are run together as one batch."""
    entered, release, batches = threading.Event(), threading.Event(), []

    def slow(z: torch.Tensor) -> torch.Tensor:
        batches.append(len(z))
        entered.set()
        assert release.wait(timeout=60)
        return generator(z)

    sampler = Sampler(slow, LATENT, {"model": "slow"})
    server, thread = _start(sampler)
    try:
        answers: dict[int, tuple[int, bytes, float]] = {}

        def get(i: int, path: str) -> None:
            answers[i] = fetch(server.url + path)

        threads = [threading.Thread(target=get, args=(0, "api/grid?start=0&count=4"))]
        threads[0].start()
        assert entered.wait(timeout=30)  # the generator is busy with the grid
        assert fetch(server.url + "api/info")[0] == 200
        assert fetch(server.url)[0] == 200
        for i in (1, 2, 3):
            threads.append(threading.Thread(target=get, args=(i, f"api/image?seed={i}")))
            threads[-1].start()
        _poll(lambda: sampler.renderer._queue.qsize() == 3)
        release.set()
        for t in threads:
            t.join(timeout=60)
        assert batches == [4, 3]
        assert all(answers[i][0] == 200 for i in range(4))
    finally:
        release.set()
        _stop(server, thread)


def test_a_failing_generator_gets_500_and_the_server_goes_on(generator):
    calls = []

    def flaky(z: torch.Tensor) -> torch.Tensor:
        calls.append(len(z))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return generator(z)

    server, thread = _start(Sampler(flaky, LATENT, {"model": "flaky"}))
    try:
        status, body, _ = fetch(server.url + "api/image?seed=0")
        assert status == 500
        assert json.loads(body)["error"] == "the generator failed: RuntimeError: out of memory"
        assert fetch(server.url + "api/image?seed=0")[0] == 200
    finally:
        _stop(server, thread)


def test_load_of_200_requests_from_8_clients(capsys):
    """The documented load test (bench/serve_load.py), on the tiny preset: every request answered
    with its image, p95 latency printed."""
    result = serve_load.main(["--preset", "hit-tiny-32", "--requests", "200", "--clients", "8"])
    assert result.requests == 200 and result.failed == 0
    printed = capsys.readouterr().out
    assert "| 200 | 8 | 0 |" in printed and "p95 ms" in printed
    print(f"p95 latency {result.p95_ms:.0f} ms, {result.requests_per_s:.1f} requests/s")


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PIXELS = """const img = arguments[0], canvas = document.createElement("canvas");
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
canvas.getContext("2d").drawImage(img, 0, 0); return canvas.toDataURL();"""


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed: pip install -e '.[serve-test]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1100,900",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.mark.slow
def test_page_in_headless_chromium(browser, model_dir, tmp_path):
    """`hitgan serve` on a free loopback port; the page renders the grid, the truncation slider
    changes the image (and the download's name), a click on the grid opens that seed, and a bad
    seed shows the server's message."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def loaded(element_id: str, fragment: str) -> None:
        WebDriverWait(browser, 60).until(lambda d: fragment in (
            d.find_element(By.ID, element_id).get_attribute("data-loaded") or ""))

    with serving(["--model", str(model_dir)]) as server:
        browser.get(server.url)
        loaded("grid", "/api/grid?start=0&count=16&trunc=1")
        grid = browser.find_element(By.ID, "grid")
        assert browser.execute_script("return arguments[0].naturalWidth", grid) == 4 * 34 - 2
        assert "32 px" in browser.find_element(By.ID, "info").text
        loaded("image", "seed=0&trunc=1")
        image = browser.find_element(By.ID, "image")
        before = browser.execute_script(PIXELS, image)

        browser.find_element(By.ID, "trunc").send_keys(Keys.HOME)  # the slider to 0.1
        loaded("image", "seed=0&trunc=0.1")
        assert browser.find_element(By.ID, "trunc-value").text == "0.10"
        assert browser.execute_script(PIXELS, image) != before
        assert browser.find_element(By.ID, "image-error").text == ""
        download = browser.find_element(By.ID, "download")
        assert download.get_attribute("download") == "seed0-trunc0.1.png"
        assert download.get_attribute("href") == image.get_attribute("src")

        # a click on the grid's second row, second column opens seed 5 (4 columns, 2x on screen)
        ActionChains(browser).move_to_element_with_offset(grid, -34, -34).click().perform()
        loaded("image", "seed=5&trunc=0.1")
        assert browser.find_element(By.ID, "seed").get_attribute("value") == "5"

        seed = browser.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("-5", Keys.TAB)
        WebDriverWait(browser, 60).until(
            lambda d: d.find_element(By.ID, "image-error").text)
        assert browser.find_element(By.ID, "image-error").text == (
            "seed=-5: out of range; use 0..4294967295")
        assert not browser.find_element(By.ID, "class-picker").is_displayed()  # unconditional
        browser.save_screenshot(str(tmp_path / "page.png"))


@pytest.fixture(scope="module")
def conditional() -> torch.nn.Module:
    """hit-tiny-32 with 3 named classes, randomly initialised (each class its own images)."""
    return visible_generator(num_classes=3, class_names=("cat", "dog", "emu"))


def test_a_conditional_generator_takes_a_class(conditional):
    server, thread = _start(Sampler(inference_fn(conditional), LATENT, {"model": "cond"}, 3,
                                    conditional.config.class_names))
    try:
        url = server.url
        info = json.loads(fetch(url + "api/info")[1])
        assert info["num_classes"] == 3 and info["class_names"] == ["cat", "dog", "emu"]
        with torch.inference_mode():
            z = seed_latent(3, LATENT)[None]
            expected = [to_uint8(conditional(z, torch.tensor([k])))[0] for k in range(3)]
        for k in range(3):
            status, body, _ = fetch(url + f"api/image?seed=3&class={k}")
            assert status == 200
            np.testing.assert_array_equal(_png(body), expected[k])
        status, body, _ = fetch(url + "api/grid?start=2&count=2&class=2")
        np.testing.assert_array_equal(_png(body)[:32, 34:66], expected[2])
        assert fetch(url + "api/interpolation?from=0&to=1&frames=2&class=1")[0] == 200
        for path, message in (("api/image?seed=1", "missing parameter 'class'"),
                              ("api/image?seed=1&class=3", "class=3: out of range; use 0..2"),
                              ("api/grid?start=0&count=2&class=x", "class='x': not an integer")):
            got, body, _ = fetch(url + path)
            assert got == 400 and message in json.loads(body)["error"]
    finally:
        _stop(server, thread)


def test_an_unconditional_generator_refuses_a_class(url):
    got, body, _ = fetch(url + "api/image?seed=1&class=0")
    assert got == 400 and "this generator is unconditional" in json.loads(body)["error"]


@pytest.mark.slow
def test_class_picker_in_headless_chromium(browser, conditional, tmp_path):
    """A conditional model's page: the class picker lists the classes and every image request
    carries the picked class; an unconditional model's page hides it (the test above)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def loaded(element_id: str, fragment: str) -> None:
        WebDriverWait(browser, 60).until(lambda d: fragment in (
            d.find_element(By.ID, element_id).get_attribute("data-loaded") or ""))

    model = save_pretrained(conditional, tmp_path / "cond")
    with serving(["--model", str(model)]) as server:
        browser.get(server.url)
        loaded("image", "seed=0&trunc=1&class=0")
        picker = Select(browser.find_element(By.ID, "class"))
        assert [o.text for o in picker.options] == ["0: cat", "1: dog", "2: emu"]
        image = browser.find_element(By.ID, "image")
        before = browser.execute_script(PIXELS, image)
        picker.select_by_value("2")
        loaded("image", "seed=0&trunc=1&class=2")
        loaded("grid", "count=16&trunc=1&class=2")
        loaded("interpolation", "frames=8&trunc=1&class=2")
        assert browser.execute_script(PIXELS, image) != before
        assert browser.find_element(By.ID, "download").get_attribute("download") == (
            "class2-seed0-trunc1.png")


def test_compiled_forward_freezes_weights_only_while_it_runs(generator, freezing_seen):
    """``--compile``: inductor's freezing is on inside each call of the compiled forward (when a
    call compiles) and off again after; serving compiles for one image and a batch up front."""
    import torch._inductor.config as inductor_config

    seen = freezing_seen
    assert inductor_config.freezing is False
    forward = device_forward(generator, torch.device("cpu"), "bf16", compile=True)
    assert seen == [True, True] and inductor_config.freezing is False  # batches of 1 and 2
    with torch.inference_mode():
        images = forward(seed_latents([0, 1, 2], LATENT))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert seen == [True] * 3 and inductor_config.freezing is False


def test_serving_precision(monkeypatch):
    from hitgan import serve

    assert serving_precision("fp32", torch.device("cpu")) == ("fp32", None)
    monkeypatch.setattr(serve, "fast_bf16", lambda device: (True, "CPU has amx_bf16"))
    assert serving_precision("auto", torch.device("cpu")) == ("bf16", "CPU has amx_bf16")
    monkeypatch.setattr(serve, "fast_bf16", lambda device: (False, "CPU has no AMX/AVX512-BF16"))
    assert serving_precision("auto", torch.device("cpu"))[0] == "fp32"
