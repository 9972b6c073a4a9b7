"""app/appinfo.py and the data files it names: the icon, the .desktop file, the package data."""

import configparser
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from app import appinfo

ROOT = Path(__file__).resolve().parents[2]


def png_header(path: Path) -> tuple[int, int, int]:
    """(width, height, colour type) from a PNG's IHDR chunk."""
    data = path.read_bytes()[:26]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[25]


@pytest.mark.parametrize("size", appinfo.ICON_SIZES)
def test_the_icon_is_rendered_at_every_size(size: int) -> None:
    path = appinfo.icon_png(size)
    assert path.is_file(), f"run packaging/make_icons.py: {path} is missing"
    assert png_header(path) == (size, size, 6)  # 6: RGBA, a transparent background


def test_the_svg_is_a_square_svg() -> None:
    root = ET.parse(appinfo.ICON_SVG).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    _, _, width, height = map(float, root.get("viewBox").split())
    assert width == height


def desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(appinfo.DESKTOP_FILE, encoding="utf-8")
    return parser["Desktop Entry"]


def test_the_desktop_file_starts_the_app_with_its_icon() -> None:
    entry = desktop_entry()
    assert entry["Type"] == "Application"
    assert entry["Exec"] == appinfo.NAME  # the console script; the bundle's installer rewrites it
    assert entry["Icon"] == appinfo.NAME == appinfo.icon_png(48).stem
    assert entry["Terminal"] == "false"
    # Wayland: the app's desktop file name (its app_id) is this file's basename; X11: WM_CLASS.
    assert appinfo.DESKTOP_FILE.name == f"{appinfo.DESKTOP_ID}.desktop"
    assert entry["StartupWMClass"] == appinfo.DESKTOP_ID


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils")
def test_the_desktop_file_is_valid() -> None:
    result = subprocess.run(
        ["desktop-file-validate", str(appinfo.DESKTOP_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout


def test_the_package_data_ships_every_resource() -> None:
    """pyproject.toml's package data holds every file in resources/ (so a wheel carries them
    as `app.resources`), the README aside; a checkout reads them where they are."""
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    patterns = setuptools["package-data"]["app.resources"]
    package = ROOT / setuptools["package-dir"]["app.resources"]
    assert appinfo.RESOURCES == package
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    resources = {p for p in appinfo.RESOURCES.rglob("*") if p.is_file() and p.name != "README.md"}
    assert shipped == resources
    named = {appinfo.DESKTOP_FILE, appinfo.ICON_SVG, *map(appinfo.icon_png, appinfo.ICON_SIZES)}
    assert named == resources


def test_licences_and_links_are_web_addresses() -> None:
    for url in [x.url for x in appinfo.THIRD_PARTY + appinfo.LINKS]:
        assert url.startswith("https://")


def test_component_versions_never_import_torch() -> None:
    code = "import sys; from app import appinfo; appinfo.component_versions(); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False"
