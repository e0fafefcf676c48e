import pytest

from deepscan.verdicts import FAKE, NO_FACE, REAL, UNTRAINED, file_verdict, track_verdict


def test_track_score_is_the_median_and_resists_a_few_misfires():
    probabilities = [0.1, 0.1, 0.2, 0.1, 0.99]  # one bad frame
    track = track_verdict(1, probabilities, [0.0, 0.5, 1.0, 1.5, 2.0], threshold=0.5)
    assert track.score == pytest.approx(0.1)
    assert track.label == REAL
    assert track.max == pytest.approx(0.99) and track.share_above_threshold == pytest.approx(0.2)
    assert (track.start_s, track.end_s, track.faces) == (0.0, 2.0, 5)


def test_any_fake_track_makes_the_file_fake():
    real = track_verdict(1, [0.1, 0.2, 0.1], [0, 1, 2], 0.5)
    fake = track_verdict(2, [0.9, 0.8, 0.7], [0, 1, 2], 0.5)
    verdict = file_verdict([real, fake], trained=True)
    assert verdict.label == FAKE and verdict.fake_tracks == [2] and verdict.score == pytest.approx(0.8)
    assert file_verdict([real], trained=True).label == REAL


def test_no_face_is_its_own_verdict_never_real():
    verdict = file_verdict([], trained=True)
    assert verdict.label == NO_FACE and verdict.score is None


def test_untrained_detector_never_gives_real_or_fake():
    fake = track_verdict(2, [0.9], [0], 0.5)
    assert file_verdict([fake], trained=False).label == UNTRAINED
    assert file_verdict([], trained=False).label == NO_FACE
