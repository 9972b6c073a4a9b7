"""The Qt for Python release this project pins against (pyproject.toml) behaves."""


def test_qt_calls_keep_none_alive(qtbot) -> None:
    """PySide6 6.12.0 takes a reference from None on each call that returns nothing; on Python
    before 3.12 that aborts the app within seconds. pyproject.toml keeps that release out."""
    import sys

    from PySide6.QtWidgets import QLabel

    label = QLabel("x")
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(300):
        label.update()
    assert sys.getrefcount(None) >= before - 10
