import io

from runtime.progress import progress_on


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_when_the_output_is_not_a_terminal():
    """Redirected to a file or a pipe there is no callback, so the producer keeps its plain log line."""
    stream = io.StringIO()
    with progress_on(stream, 100, "sending") as progress:
        assert progress is None
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_with_the_count_sent():
    """On a terminal the callback draws a bar that ends at the count sent."""
    stream = Terminal()
    with progress_on(stream, 300, "sending to input_topic") as progress:
        assert progress is not None
        progress(150)
        progress(300)
    assert "sending to input_topic" in stream.getvalue() and "300/300" in stream.getvalue()
