"""A progress bar on stderr for long work: it appears only once the work has taken
DELAY seconds, and only on a terminal, so short work and logs get nothing extra."""
import sys
import time

DELAY = 1.0  # seconds of work before the bar appears
REFRESH = 0.2  # seconds between redraws
WIDTH = 30  # characters of the bar itself


class ProgressBar:
    """`label [#########.........] done/total elapsed`, redrawn in place as advance()
    is called; close() (or leaving a `with` block) ends its line."""

    def __init__(self, label, total, stream=None):
        self.label, self.total, self.done = label, total, 0
        self.stream = sys.stderr if stream is None else stream
        self.started = time.monotonic()
        self.drawn = None  # when the bar was last drawn; None while not shown

    def advance(self, count):
        self.done += count
        now = time.monotonic()
        if now - self.started < DELAY or not self.stream.isatty():
            return
        if self.drawn is None or now - self.drawn >= REFRESH or self.done >= self.total:
            self.draw(now)

    def draw(self, now):
        filled = WIDTH * self.done // max(1, self.total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                          f"{self.done:,}/{self.total:,} {now - self.started:.0f}s")
        self.stream.flush()
        self.drawn = now

    def close(self):
        if self.drawn is not None:
            self.draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def steps(label, total, step, stream=None):
    """range(0, total, step), advancing a ProgressBar of `total` items by each step's
    items once the caller has done them."""
    with ProgressBar(label, total, stream) as bar:
        for start in range(0, total, step):
            yield start
            bar.advance(min(step, total - start))
