"""The training progress bar on a real terminal (a pseudo-terminal of a set width) and in job logs."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import termios

from cluster.progress import RunProgress

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _terminal(columns: int) -> tuple[int, io.TextIOWrapper]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    os.set_blocking(master, False)
    return master, os.fdopen(slave, "w", encoding="utf-8")


def _last_line(master: int) -> str:
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    screens = ANSI.sub("", data.decode("utf-8")).replace("\n", "\r").split("\r")
    return [s for s in screens if s.strip()][-1]


def test_the_numbers_fit_a_narrow_terminal_and_the_bar_gives_way() -> None:
    for columns in (80, 120):
        master, stream = _terminal(columns)
        progress = RunProgress(total=200, start=0, stream=stream)
        assert progress.live
        progress.update(0, accuracy=0.4512)
        progress.update(12, reward=0.52345, success=0.3121)
        stream.flush()
        line = _last_line(master)
        assert line.startswith("train 12/200, accuracy 45.1%, reward 0.523, success 31.2% [eta "), line
        assert len(line) <= columns - 1, (len(line), line)
        if columns >= 100:
            assert re.search(r"step/s\] \|.+\|$", line), line
        progress.close()
        stream.close()
        os.close(master)


def test_an_evaluation_note_lasts_until_the_next_step() -> None:
    master, stream = _terminal(120)
    progress = RunProgress(total=10, start=0, stream=stream)
    progress.phase_note("evaluating the base policy")
    stream.flush()
    assert _last_line(master).startswith("train (evaluating the base policy) 0/10")
    progress.update(0, accuracy=0.25)
    progress.update(1, reward=0.1, success=0.2)
    stream.flush()
    line = _last_line(master)
    assert line.startswith("train 1/10, accuracy 25.0%, reward 0.100, success 20.0% [eta") and "evaluating" not in line
    progress.close()
    stream.close()
    os.close(master)


def test_job_logs_get_one_whole_line_per_step() -> None:
    log = io.StringIO()
    progress = RunProgress(total=5, start=0, stream=log)
    assert not progress.live
    progress.update(0, accuracy=0.5)
    progress.phase_note("evaluating step 2")
    progress.update(2, reward=1.25, success=0.75)
    lines = log.getvalue().splitlines()
    assert lines[0] == "[train] step 0/5 accuracy 50.0% 0.00 step/s eta ?"
    assert lines[1] == "[train] evaluating step 2"
    assert lines[2].startswith("[train] step 2/5 accuracy 50.0%, reward 1.250, success 75.0% ")
