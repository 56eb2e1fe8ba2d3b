"""runtime/progress: heartbeat lines off a terminal, with rate and ETA."""
import time

from seglab.runtime.progress import Progress, duration_text, track


def test_heartbeat_lines_off_terminal_carry_count_rate_and_eta(capsys, monkeypatch):
    monkeypatch.setenv("SEGLAB_HEARTBEAT", "0.05")
    out = []
    for item in track(range(6), desc="train 1", unit="img"):
        time.sleep(0.03)
        out.append(item)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("train 1:")]
    assert out == list(range(6))
    assert lines, "no heartbeat line printed off a terminal"
    assert "/6 img" in lines[0] and "img/s" in lines[0] and "ETA" in lines[0]


def test_heartbeat_off_and_disabled(capsys, monkeypatch):
    monkeypatch.setenv("SEGLAB_HEARTBEAT", "0")
    list(track(range(3), desc="val"))
    with Progress(3, "x", enabled=False, every=0.0) as bar:
        bar.update(3)
    assert capsys.readouterr().out == ""


def test_duration_text():
    assert duration_text(42) == "42s" and duration_text(185) == "3m05s" and duration_text(3720) == "1h02m"
