"""progress.py: a bar on a terminal's stderr once work takes long; nothing otherwise."""
import io

import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_long_work_on_a_terminal_shows_a_bar_that_ends_its_line(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr(progress, "REFRESH", 0.0)
    stream = Terminal()
    assert list(progress.steps("embedding", 10, 4, stream)) == [0, 4, 8]
    drawn = stream.getvalue()
    assert drawn.startswith("\rembedding [") and drawn.endswith("\n")
    assert "4/10" in drawn and "8/10" in drawn
    assert drawn.rstrip("\n").split("\r")[-1].startswith(f"embedding [{'#' * 30}] 10/10")


def test_short_work_and_a_stream_that_is_no_terminal_get_nothing(monkeypatch):
    stream = Terminal()
    assert list(progress.steps("embedding", 10, 4, stream)) == [0, 4, 8]
    assert stream.getvalue() == ""  # done before DELAY
    monkeypatch.setattr(progress, "DELAY", 0.0)
    log = io.StringIO()  # e.g. stderr sent to a file
    assert list(progress.steps("embedding", 10, 4, log)) == [0, 4, 8]
    assert log.getvalue() == ""
