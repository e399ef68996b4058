"""The circuit over training, interactive (circuit_stability.views): the figure's frames on hand-built checkpoints,
and the page in a real headless browser (Debian's Chromium, driven by selenium): it renders, the slider moves to
another step, and the drawn edges and role colours change with it."""

import re
import shutil
import time

import pytest

from circuit_stability import views
from circuit_stability.views import ROLE_COLOURS, StepView, circuit_view_page, node_positions, task_figure

# a 2-layer, 2-head model; the name-mover role passes from a1.h0 (step 100) to a1.h1 (step 200); step 0 not valid
STEPS = [
    StepView(step=0, tokens_seen=0, valid=False, reason="the task is not learnt", metric=0.01, metric_name="logit_diff"),
    StepView(step=100, tokens_seen=6400, valid=True, metric=2.0, metric_name="logit_diff", f_paper=0.9, f_norm=0.95,
             edges=[("input", "a0.h0", -0.1), ("a0.h0", "a1.h0", -2.0), ("a1.h0", "logits", -4.0)],
             roles={"a1.h0": "name_mover", "a0.h0": "induction"}),
    StepView(step=200, tokens_seen=12800, valid=True, metric=3.0, metric_name="logit_diff", f_paper=0.85, f_norm=0.9,
             edges=[("input", "a0.h1", -0.5), ("a0.h1", "a1.h1", -1.0), ("a1.h1", "logits", -3.0),
                    ("m0", "logits", -0.2)],
             roles={"a1.h1": "name_mover", "a0.h1": "induction"}),
]


def _nodes(frame) -> dict:
    trace = frame.data[-1]
    names = list(node_positions(2, 2))
    return dict(zip(names, trace.marker.color))


def test_each_step_is_a_frame_with_its_edges_widths_roles_and_validity():
    fig = task_figure("m", "ioi", STEPS, n_layers=2, n_heads=2)
    assert [f.name for f in fig.frames] == ["0", "100", "200"]
    assert [s["label"] for s in fig.layout.sliders[0].steps] == ["0", "100", "200"]
    assert fig.layout.sliders[0].active == 1  # the first valid checkpoint
    invalid, first, second = fig.frames
    assert all(len(t.x or []) == 0 for t in invalid.data[:-1]) and set(invalid.data[-1].marker.color) == {views.INVALID}
    assert "no valid circuit: the task is not learnt" in invalid.layout.title.text
    # edge a1.h0 -> logits (|score| 4, the largest) in the widest bin, input -> a0.h0 (0.1) in the narrowest
    widest, narrowest = first.data[views.WIDTH_BINS - 1], first.data[0]
    assert list(widest.x) == [0.0, 0.5, None] and list(widest.y) == [1.0, 2.0, None]
    assert list(narrowest.x) == [0.5, 0.0, None] and narrowest.line.width < widest.line.width
    # the hand-over: the name-mover colour moves from a1.h0 to a1.h1
    assert _nodes(first)["a1.h0"] == ROLE_COLOURS["name_mover"] == _nodes(second)["a1.h1"]
    assert _nodes(first)["a1.h1"] == _nodes(second)["a1.h0"] == views.NO_ROLE
    assert "3 edges, f_paper 0.90, f_norm 0.95" in first.layout.title.text
    with pytest.raises(ValueError, match="edge node 'a2.h0' is not a node of a 2-layer, 2-head graph"):
        task_figure("m", "ioi", [StepView(step=1, tokens_seen=1, valid=True, edges=[("a0.h0", "a2.h0", 1.0)])], 2, 2)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.fail("no chromedriver: install Debian's chromium and chromium-driver (.ci/run does: apt-get install "
                    "chromium chromium-driver)", pytrace=False)
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_renders_offline_and_its_slider_changes_the_drawn_circuit(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = tmp_path / "circuits_m.html"
    page.write_text(circuit_view_page("m", {"ioi": task_figure("m", "ioi", STEPS, 2, 2),
                                            "gp": task_figure("m", "gp", STEPS[:2], 2, 2)}))
    text = page.read_text()
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=[\"']https?://", text)  # nothing from the web
    driver = _browser()
    try:
        driver.get(page.as_uri())
        fig = driver.find_element(By.ID, "circuit-ioi")
        assert driver.find_element(By.ID, "circuit-gp")

        def drawn():
            edges = [p.get_attribute("d") for p in fig.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace path.js-line")]
            colours = [p.get_attribute("style") for p in fig.find_elements(By.CSS_SELECTOR, ".scatterlayer .point")]
            label = fig.find_element(By.CSS_SELECTOR, ".slider-container .slider-label").text
            return edges, colours, label

        edges, colours, label = drawn()
        assert label == "step 100" and any(edges)
        driver.execute_script("arguments[0].scrollIntoView()", fig)
        target = next(g for g in fig.find_elements(By.CSS_SELECTOR, ".slider-label-group") if g.text == "200")
        ActionChains(driver).move_to_element(target).click().perform()
        for _ in range(50):  # the frame is drawn asynchronously
            after = drawn()
            if after[2] == "step 200":
                break
            time.sleep(0.1)
        assert after[2] == "step 200"
        assert after[0] != edges and after[1] != colours  # other edges, and the name-mover colour moved
    finally:
        driver.quit()


def test_a_shared_key_input_is_drawn_into_its_live_heads():
    """Grouped-query attention (4 query heads, 2 key/value heads): an edge into a0.kv0<k> ends at the heads of
    group 0 that write into the circuit (here a0.h1, not a0.h0), a query edge at its own head."""
    import numpy as np

    from circuit_stability.graph import Graph

    g = Graph(1, 4, False, 2)

    def live(*names):  # the writers with an edge in the circuit
        return np.isin(g.writer_names, names)

    assert g.reader_nodes(g.reader_index(0, 0, "k"), live("input", "a0.h1")) == ["a0.h1"]
    assert g.reader_nodes(g.reader_index(0, 2, "q"), live()) == ["a0.h2"]
    assert g.reader_nodes(g.logits_index, live()) == ["logits"]
