"""The plugin in a real viewer: the OHIF v3 shipped in the monailabel 0.8.5 wheel (served at /ohif/), in headless
Chromium driven by playwright, on the MONAI Label server with our app, on Orthanc's DICOMweb holding a CT phantom.

Run alone with `-m browser`. Screenshots of each step are kept in out/ohif-browser/ (docs/plugin.md shows some).
Chromium renders WebGL in software (SwiftShader); nothing is fetched from outside 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from monailabel.client import MONAILabelClient
from PIL import Image
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from medmrcnn.io import load_volume
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from tests.plugins.conftest import ROOT
from tests.plugins.monailabel_server import start_server
from tests.plugins.orthanc import HAVE_ORTHANC, MISSING_ORTHANC, running_orthanc, store
from tests.plugins.viewer_params import OHIF_PARAMS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.monailabel,
    pytest.mark.browser,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not HAVE_ORTHANC, reason=MISSING_ORTHANC),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Chromium is not installed (apt-get install chromium; `make .venv-monailabel/.installed` "
                              "does it as root)"),
]

ARTIFACTS = ROOT / "out" / "ohif-browser"
# Software WebGL, and none of Chromium's own calls home (there is no network here besides 127.0.0.1).
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-domain-reliability", "--no-first-run",
                 "--metrics-recording-only", "--disable-breakpad"]
LABELS = {"liver": 1, "kidney": 2, "tumour": 3}
AXIAL = "mpr-axial"  # the MONAI Label mode opens the series in MPR; its first viewport is axial
IMAGE_ONLY = "1-axial-image-only.png"  # the axial viewport before any segmentation

# OHIF's labelmap (cornerstone volume '1' of the MONAI Label panel), as counts and as bytes in its voxel order.
JS_LABELMAP = """(id) => {
    const v = window.services.segmentationService.getLabelmapVolume(id);
    if (!v) return null;
    const a = v.voxelManager.getCompleteScalarDataArray();
    let s = ''; for (let i = 0; i < a.length; i += 8192) s += String.fromCharCode(...a.subarray(i, i + 8192));
    return {dims: v.dimensions, data: btoa(s)};
}"""
JS_HAS_LABELS = """() => { const v = window.services.segmentationService.getLabelmapVolume('1'); if (!v) return false;
    const a = v.voxelManager.getCompleteScalarDataArray(); for (const x of a) if (x) return true; return false; }"""
JS_SEGMENT_NAMES = """(label) => Object.fromEntries(window.services.segmentationService.getSegmentations()
    .filter(s => s.label === label).flatMap(s => Object.values(s.segments).filter(g => g)
    .map(g => [g.label, g.segmentIndex])))"""
JS_SEGMENTATION_ID = """(label) => { const s = window.services.segmentationService.getSegmentations()
    .find(s => s.label === label); return s ? s.segmentationId : null; }"""
PANEL_SEGMENTATION = "Segmentations"  # what OHIF's MONAI Label panel calls the labelmap it fills
SEG_SEGMENTATION = "medmrcnn segmentation"  # our DICOM-SEG's SeriesDescription, which OHIF names it by
# Canvas (CSS pixel) positions of voxel indices (i, j, k) of the displayed volume in a viewport, and the slice shown.
JS_CANVAS_POINTS = """([viewportId, ijk]) => {
    const vp = window.cornerstone.getRenderingEngines()[0].getViewport(viewportId);
    const volume = window.cornerstone.cache.getVolume(vp.getVolumeId());
    const k = volume.imageData.worldToIndex(vp.getCamera().focalPoint)[2];
    return {slice: Math.round(k), points: ijk.map(p => vp.worldToCanvas(volume.imageData.indexToWorld(p)))};
}"""
JS_HAS_POINT = """() => window.cornerstoneTools.annotation.state.getAllAnnotations()
    .some(a => a.metadata.toolName === 'ProbeMONAILabel')"""
JS_VIEWPORT_RECT = """(id) => { const r = window.cornerstone.getRenderingEngines()[0].getViewport(id)
    .element.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; }"""
JS_VIEWPORT_READY = """(id) => { const e = window.cornerstone && window.cornerstone.getRenderingEngines()[0];
    const vp = e && e.getViewport(id); return !!(vp && vp.getDefaultActor && vp.getDefaultActor()); }"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    """Orthanc holding a phantom CT series; yields (DICOMweb URL, series folder, phantom)."""
    base = tmp_path_factory.mktemp("archive")
    phantom = make_ct_phantom(shape=(16, 192, 192), spacing=(3.0, 1.4, 1.4), n_tumours=2, seed=5)
    with running_orthanc(base) as url:
        store(url, write_dicom_series(phantom.volume, base / "ct"))
        yield f"{url}/dicom-web", base / "ct", phantom


@pytest.fixture(scope="module")
def server(archive, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("server")
    os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = str(base / "cache")
    try:
        srv = start_server(archive[0], base / "server.log", {"model_dir": str(base / "model"), "device": "cpu"})
    finally:
        del os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"]
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server, archive):
    """OHIF's MONAI Label mode opened on the phantom study, its panel connected to our server."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    study_uid = _study_uid(archive[0])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1600, "height": 1000})
        pg.set_default_timeout(120_000)
        pg.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}", wait_until="networkidle")
        pg.wait_for_function(JS_VIEWPORT_READY, arg=AXIAL)
        dismiss_notice(pg)
        pg.wait_for_timeout(2000)
        shot(pg, "1-study-opened.png")
        shot(pg, IMAGE_ONLY, AXIAL)
        # The panel's server field defaults to http://127.0.0.1:8000; its refresh button connects (GET /info/).
        url_box = pg.locator("input[value*='8000']").first
        url_box.fill(server.url + "/")
        box = url_box.bounding_box()
        pg.mouse.click(box["x"] + box["width"] + 30, box["y"] + box["height"] / 2)
        pg.get_by_title("Run Segmentation", exact=True).wait_for()
        pg.wait_for_timeout(1500)
        shot(pg, "2-panel-connected.png")
        yield pg
        browser.close()


def _study_uid(dicomweb: str) -> str:
    return DICOMwebClient(dicomweb).search_for_studies()[0]["0020000D"]["Value"][0]


def shot(pg: Page, name: str, viewport: str | None = None) -> np.ndarray:
    """Screenshot of the page (or of one viewport) kept in ARTIFACTS; returned as an RGB array."""
    clip = pg.evaluate(JS_VIEWPORT_RECT, viewport) if viewport else None
    png = pg.screenshot(path=str(ARTIFACTS / name), clip=clip)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def nrrd_bytes(body: bytes) -> np.ndarray:
    """The raw uint8 voxels of a NRRD answer, as OHIF's reader takes them."""
    return np.frombuffer(body.partition(b"\n\n")[2], dtype=np.uint8)


def sent_params(body: bytes | None) -> dict:
    """The JSON `params` field of the multipart form a viewer posted."""
    found = re.search(rb'name="params"\r\n\r\n(.*?)\r\n--', body or b"", re.S)
    assert found, (body or b"")[:300]
    return json.loads(found.group(1))


def labelmap(pg: Page, segmentation_id: str) -> np.ndarray:
    """The voxels of an OHIF labelmap segmentation, in OHIF's voxel order."""
    return np.frombuffer(base64.b64decode(pg.evaluate(JS_LABELMAP, segmentation_id)["data"]), dtype=np.uint8)


def dismiss_notice(pg: Page) -> None:
    """Close OHIF's "not for clinical use" notice (shown until it is confirmed once per browser profile)."""
    pg.wait_for_timeout(1500)
    notice = pg.get_by_text("Confirm and Hide")
    if notice.count():
        notice.click()


def on_slice(pg: Page, ijk: np.ndarray) -> tuple[int, np.ndarray]:
    """The axial slice OHIF shows and the canvas pixel (x, y) of each voxel index (i, j, k)."""
    got = pg.evaluate(JS_CANVAS_POINTS, [AXIAL, ijk.tolist()])
    return got["slice"], np.rint(np.array(got["points"])).astype(int)


def test_a_click_in_a_tumour_brings_that_tumour_back(page: Page, archive) -> None:
    # medmrcnn_interactive (a "deepgrow" model) in OHIF's Point Prompts: pick the organ, click in the viewport, Run.
    from scipy import ndimage

    _, _, phantom = archive
    truth = phantom.class_map()
    z0 = on_slice(page, np.zeros((1, 3), int))[0]
    components, n = ndimage.label(truth[z0] == LABELS["tumour"])
    assert n, "no tumour on the slice OHIF shows"
    biggest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(components), components, range(1, n + 1))))
    rows, cols = np.nonzero(components == biggest)
    centre = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    j, i = int(rows[centre]), int(cols[centre])
    _, (xy,) = on_slice(page, np.array([[i, j, z0]]))
    rect = page.evaluate(JS_VIEWPORT_RECT, AXIAL)

    page.get_by_text("Point Prompts", exact=True).click()  # activates OHIF's point tool
    page.locator("tr.clickable-row", has_text="tumour").click()
    # OHIF's Run throws (no request) when no point was placed, e.g. a click before the tool was active: retry.
    for _ in range(3):
        page.mouse.click(rect["x"] + xy[0], rect["y"] + xy[1])
        try:
            page.wait_for_function(JS_HAS_POINT, timeout=5000)
            break
        except PlaywrightTimeoutError:
            page.wait_for_timeout(1000)
    assert page.evaluate(JS_HAS_POINT), "OHIF placed no point where the viewport was clicked"
    with page.expect_response(lambda r: "/infer/medmrcnn_interactive" in r.url, timeout=300_000) as answer:
        page.get_by_title("Run PointPrompts", exact=True).click()
    assert answer.value.status == 200, answer.value.text()[:300]
    sent = sent_params(answer.value.request.post_data_buffer)
    served = nrrd_bytes(answer.value.body()).reshape(truth.shape)
    page.wait_for_function(JS_HAS_LABELS, timeout=60_000)
    page.wait_for_timeout(1500)
    shot(page, "3-point-prompt.png")
    # OHIF sends the click as a voxel index (i, j, k), and the keys it sends with every result.
    assert np.abs(np.array(sent["foreground"]) - [i, j, z0]).max() <= 1, sent
    assert {k: sent[k] for k in OHIF_PARAMS} == OHIF_PARAMS

    # The tumour that was clicked comes back, alone, with the tumour's value; OHIF shows it as "tumour".
    assert set(np.unique(served)) == {0, LABELS["tumour"]} and served[z0, j, i] == LABELS["tumour"]
    instance = phantom.gt_instances == phantom.gt_instances[z0, j, i]
    got = served == LABELS["tumour"]
    assert 2 * (got & instance).sum() / (got.sum() + instance.sum()) > 0.6
    names = page.evaluate(JS_SEGMENT_NAMES, PANEL_SEGMENTATION)
    held = labelmap(page, "1").reshape(truth.shape)
    assert held[z0, j, i] == names["tumour"] and set(np.unique(held)) == {0, names["tumour"]}


def test_auto_segmentation_is_displayed_with_our_label_names(page: Page, server, archive) -> None:
    _, series, phantom = archive
    before = np.asarray(Image.open(ARTIFACTS / IMAGE_ONLY).convert("RGB")).astype(np.int16)
    with page.expect_response(lambda r: "/infer/medmrcnn_volume" in r.url, timeout=300_000) as answer:
        page.get_by_title("Run Segmentation", exact=True).click()
    assert answer.value.status == 200, answer.value.text()[:300]
    served = nrrd_bytes(answer.value.body())
    page.wait_for_function(JS_HAS_LABELS, timeout=60_000)
    page.wait_for_timeout(2000)
    after = shot(page, "4-after-run.png", AXIAL)
    shot(page, "4-after-run-page.png")

    # OHIF lists our label names and holds exactly what the server answered (values mapped to its segments).
    names = page.evaluate(JS_SEGMENT_NAMES, PANEL_SEGMENTATION)
    assert set(LABELS) <= set(names), names
    held = labelmap(page, "1")
    to_ohif = np.zeros(256, dtype=np.uint8)
    for name, value in LABELS.items():
        to_ohif[value] = names[name]
    assert held.shape == served.shape and (held == to_ohif[served]).all()
    # ... which is the phantom's anatomy: OHIF's voxel order (i, j, k) is the series' (x, y, z).
    truth = phantom.class_map()
    ours = served.reshape(truth.shape)
    for name, value in LABELS.items():
        overlap = 2 * ((ours == value) & (truth == value)).sum() / ((ours == value).sum() + (truth == value).sum())
        assert overlap > 0.6, f"{name}: Dice {overlap:.2f}"

    # The rendered viewport differs from the image alone where the organs are, and not in the air around the body.
    z0 = on_slice(page, np.zeros((1, 3), int))[0]
    changed = np.abs(after - before).sum(axis=2) > 40
    h, w = changed.shape

    def changed_at(mask: np.ndarray) -> float:
        j, i = np.nonzero(mask)
        pick = np.linspace(0, len(i) - 1, min(len(i), 1500)).astype(int)
        _, xy = on_slice(page, np.stack([i[pick], j[pick], np.full(len(pick), z0)], axis=1))
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        return float(changed[xy[inside, 1], xy[inside, 0]].mean())

    from scipy.ndimage import binary_erosion

    liver = binary_erosion(truth[z0] == LABELS["liver"], iterations=3)
    air = binary_erosion(phantom.volume.array[z0] < -500, iterations=3)
    assert liver.sum() > 200 and air.sum() > 200
    assert changed_at(liver) > 0.9, "the liver is not coloured in the viewport"
    assert changed_at(air) < 0.02, "the viewport changed outside the body"


def test_a_label_saved_to_the_archive_is_a_seg_that_ohif_displays(page: Page, server, archive,
                                                                   tmp_path: Path) -> None:
    dicomweb, series, phantom = archive
    series_uid = load_volume(series).series_uid
    # OHIF's MONAI Label panel (monailabel 0.8.5) has no "save label" action: save what the viewer received, as
    # 3D Slicer's "Submit Label" does, through MONAI Label's client.
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    label_file, _ = client.infer("medmrcnn_volume", series_uid, {"result_extension": ".nrrd"})
    client.save_label(series_uid, label_file)
    web = DICOMwebClient(dicomweb)
    segs = web.search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg_uid = segs[0]["0020000E"]["Value"][0]
    meta = web.retrieve_series_metadata(_study_uid(dicomweb), seg_uid)[0]
    assert meta["00081115"]["Value"][0]["0020000E"]["Value"][0] == series_uid  # ReferencedSeriesSequence

    # OHIF reads our SEG (BINARY, empty frames left out) from the archive: reload the study, open the SEG series
    # and answer "Yes" to "Do you want to open this Segmentation?".
    page.reload(wait_until="networkidle")
    page.wait_for_function(JS_VIEWPORT_READY, arg=AXIAL)
    dismiss_notice(page)
    page.locator("[data-cy='study-browser-thumbnail-no-image']", has_text="SEG").first.dblclick()
    page.get_by_role("button", name="Yes").first.wait_for()
    # OHIF's error toast about the axial MPR viewport (docs/plugin.md) lies over the button: click it directly.
    page.get_by_role("button", name="Yes").first.dispatch_event("click")
    page.wait_for_function(JS_SEGMENTATION_ID, arg=SEG_SEGMENTATION)
    page.wait_for_timeout(3000)
    shot(page, "5-seg-from-archive.png")
    names = page.evaluate(JS_SEGMENT_NAMES, SEG_SEGMENTATION)
    assert set(names) == set(LABELS), names
    held = labelmap(page, page.evaluate(JS_SEGMENTATION_ID, SEG_SEGMENTATION))
    saved = sitk.GetArrayFromImage(sitk.ReadImage(label_file)).ravel()  # (z, y, x) = OHIF's (k, j, i)
    to_ohif = np.zeros(256, dtype=np.uint8)
    for name, value in LABELS.items():
        to_ohif[value] = names[name]
    assert held.shape == saved.shape and (held == to_ohif[saved]).all()
