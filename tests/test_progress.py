"""Progress bars stay short when stderr is a file or a CI log (issue 11 friction)."""

import io
import time

from da_embed.progress import LOG_INTERVAL, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_written_to_a_file_refreshes_rarely_and_leaves_one_line():
    out = io.StringIO()
    bar = progress_bar(range(200), desc="work", file=out, leave=False)
    assert bar.mininterval == LOG_INTERVAL and bar.leave
    for _ in bar:
        time.sleep(0.002)  # 0.4 s in all: a terminal bar would refresh several times
    text = out.getvalue()
    # tqdm writes "\r" before every refresh: the first and the final one only.
    assert text.count("\r") <= 3, text
    assert text.endswith("\n") and "200/200" in text


def test_postfix_updates_do_not_redraw_a_logged_bar():
    out = io.StringIO()
    bar = progress_bar(total=100, desc="train", file=out)
    for step in range(100):
        bar.update()
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")  # tqdm alone redraws at every call
    bar.close()
    assert out.getvalue().count("\r") <= 3, out.getvalue()
    assert "loss=0.010" in out.getvalue()


def test_a_bar_on_a_terminal_keeps_tqdms_behaviour():
    out = _Terminal()
    bar = progress_bar(range(3), file=out, leave=False)
    assert bar.mininterval < LOG_INTERVAL and not bar.leave
    list(bar)


def test_a_disabled_bar_writes_nothing():
    out = io.StringIO()
    assert sum(progress_bar(range(4), file=out, disable=True)) == 6
    assert out.getvalue() == ""
