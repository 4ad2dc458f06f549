"""What a long pass over images shows while it runs: a progress bar on a terminal (keras.utils.Progbar), and
one line with the count and the seconds when the output goes to a file (a log, a sweep's run log)."""

import sys
import time

import keras


class Progress:
    """`with Progress("decoding", total) as progress: ... progress.add(n)`. With `bar` False, only the line, on
    stderr (for a command whose stdout is its output)."""

    def __init__(self, what, total, unit="images", bar=True):
        self.what, self.total, self.unit, self.count = what, total, unit, 0
        self.file = sys.stdout if bar else sys.stderr
        shown = bar and sys.stdout.isatty() and total
        self.bar = keras.utils.Progbar(total, unit_name=unit.rstrip("s")) if shown else None

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def add(self, count):
        self.count += count
        if self.bar is not None:
            self.bar.add(count)

    def __exit__(self, kind, error, traceback):
        if kind is None and self.bar is None and self.total:
            print(f"   {self.what}: {self.count} {self.unit} in {time.perf_counter() - self.start:.1f} s",
                  file=self.file, flush=True)
        return False
