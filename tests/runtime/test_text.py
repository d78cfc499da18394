from runtime.text import printable


def test_printable_text_is_returned_unchanged():
    """Ordinary text, accents and symbols included, is left alone."""
    assert printable("user 42 p=0.731 ███ café") == "user 42 p=0.731 ███ café"


def test_every_control_character_is_escaped():
    """C0, DEL, C1 and format characters come out as visible escapes."""
    text = "".join(chr(c) for c in [*range(32), 127, 0x85, 0x9B, 0x200B, 0x202E])
    shown = printable(text)
    assert shown.isprintable()
    assert shown.startswith("\\x00\\x01") and "\\x1b" in shown and "\\u202e" in shown
