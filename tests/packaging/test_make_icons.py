"""packaging/make_icons.py: the committed PNGs are what the SVG renders to."""

import numpy as np
import pytest
from PySide6.QtGui import QImage

from app import appinfo


def pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    data = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
    return data.reshape(image.height(), image.bytesPerLine())[:, : 4 * image.width()].astype(int)


@pytest.mark.parametrize("size", [16, 64, 256])
def test_the_pngs_are_rendered_from_the_svg(qapp, load_packaging, size: int) -> None:
    rendered = pixels(load_packaging("make_icons").render(appinfo.ICON_SVG, size))
    committed = pixels(QImage(str(appinfo.icon_png(size))))
    # Renderers of other Qt versions may differ by a shade; an edited SVG differs far more.
    assert np.abs(rendered - committed).mean() < 2, "run packaging/make_icons.py and commit"
