"""What the caller heard of an agent turn, from the played-speech clock."""

from callwright.agent.playback import AgentTurn, PushedSegment

RATE = 8000


def _turn(*sentences: str, seconds: float = 1.0) -> AgentTurn:
    turn = AgentTurn(started=0.0, speech_end=None)
    for sentence in sentences:
        turn.planned.append(sentence)
        index = turn.add_piece(b"\0\0" * int(seconds * RATE), RATE)
        turn.segments.append(PushedSegment(piece=index, offset=0,
                                           length=len(turn.pieces[index].audio)))
    return turn


def test_the_cut_falls_on_the_last_whole_word_heard():
    turn = _turn("Your table is booked.", "See you at seven tonight.")
    assert turn.pushed_s == 2.0
    assert turn.heard_so_far(0.0) == 0
    # Half-way through the first sentence: "Your table" (mid "is" is not heard).
    assert turn.planned_text[: turn.heard_so_far(0.5)] == "Your table"
    # Into the second piece, proportionally by characters.
    heard = turn.planned_text[: turn.heard_so_far(1.5)]
    assert heard.startswith("Your table is booked. See you")
    assert turn.heard_so_far(5.0) == len(turn.planned_text)


def test_marks_count_even_without_a_clock_and_a_pause_freezes_it():
    turn = _turn("One two three four.", "Five six.")
    turn.heard_chars = turn.pieces[0].text_end  # the first piece's mark came back
    assert turn.heard_so_far(None) == turn.pieces[0].text_end
    turn.paused = True  # what plays now is not agent speech the caller hears
    assert turn.heard_so_far(1.9) == turn.pieces[0].text_end


def test_a_resumed_piece_starts_just_before_the_word_it_stopped_in():
    turn = _turn("alpha beta gamma delta")
    piece = turn.pieces[0]
    cut = turn.planned_text.index("gamma")
    offset = piece.offset_of(cut)
    assert offset % 2 == 0
    assert piece.chars_at(offset) < cut <= piece.chars_at(offset + int(0.06 * RATE) * 2)
