import pytest

from deepscan.verdicts import (
    FAKE,
    INCONCLUSIVE,
    NO_FACE,
    REAL,
    UNTRAINED,
    file_verdict,
    member_agreement,
    track_verdict,
)


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


def test_a_track_all_outside_the_reliable_range_is_inconclusive_and_says_why():
    outside = [["too small"], ["too small", "too blurred"], ["too blurred"]]
    track = track_verdict(1, [0.1, 0.2, 0.1], [0, 1, 2], 0.5, outside_range=outside,
                          reliable_range="faces of at least 64 px and sharpness 20")
    assert track.label == INCONCLUSIVE and track.score == pytest.approx(0.1)  # the score is still reported
    assert track.share_outside_range == 1.0 and track.judged_faces == 3  # of all its faces, none being inside
    assert track.reason == ("all 3 of its faces are outside the range the detector is reliable on (faces of at least 64 px "
                            "and sharpness 20): 2 too blurred, 2 too small")


def test_a_track_partly_outside_the_range_is_judged_on_its_faces_inside_only():
    # Four faces outside the range scored high (where the detector is unreliable), three inside scored low: the
    # median of all seven (0.9) would call the track fake on faces the detector cannot judge.
    probabilities = [0.95, 0.9, 0.2, 0.3, 0.25, 0.97, 0.92]
    outside = [["too small"], ["too small"], [], [], [], ["too blurred"], ["too small"]]
    track = track_verdict(1, probabilities, list(range(7)), 0.5, outside_range=outside)
    assert track.score == pytest.approx(0.25)  # median of 0.2, 0.3, 0.25; of all seven it would be 0.9
    assert track.label == REAL and track.reason is None
    assert track.faces == 7 and track.judged_faces == 3
    assert track.share_outside_range == pytest.approx(4 / 7)
    assert track.mean == pytest.approx(0.25) and track.max == pytest.approx(0.3)
    assert track.share_above_threshold == 0.0
    # One face inside is enough to judge the track, on that face alone.
    single = track_verdict(2, [0.1, 0.8, 0.1], [0, 1, 2], 0.5, outside_range=[["too small"], [], ["too small"]])
    assert single.label == FAKE and single.score == pytest.approx(0.8) and single.judged_faces == 1
    assert single.share_outside_range == pytest.approx(2 / 3)


def test_without_a_reliable_range_every_face_counts():
    track = track_verdict(1, [0.1, 0.9, 0.8], [0, 1, 2], 0.5)
    assert track.score == pytest.approx(0.8) and track.judged_faces is None and track.share_outside_range == 0.0


def test_an_inconclusive_track_makes_the_file_inconclusive_never_real():
    real = track_verdict(1, [0.1, 0.2], [0, 1], 0.5)
    unjudged = track_verdict(2, [0.1], [0], 0.5, outside_range=[["too small"]])
    verdict = file_verdict([real, unjudged], trained=True)
    assert verdict.label == INCONCLUSIVE
    assert "track 2 could not be judged" in verdict.reason
    assert "the other 1 track(s) scored as authentic" in verdict.reason
    assert "not called real" in verdict.reason
    fake = track_verdict(3, [0.9], [0], 0.5)
    assert file_verdict([real, unjudged, fake], trained=True).label == FAKE  # a judged forgery still decides
    assert file_verdict([unjudged], trained=False).label == UNTRAINED


def test_member_agreement_counts_members_whose_own_label_is_the_ensembles():
    members, agreement = member_agreement(
        {"a": [0.9, 0.8, 0.7], "b": [0.6, 0.6, 0.6], "c": [0.1, 0.2, 0.1]},
        {"a": 0.5, "b": 0.7, "c": 0.5},
        FAKE,
    )
    assert members["a"] == {"score": pytest.approx(0.8), "threshold": 0.5, "label": FAKE}
    assert members["b"]["label"] == REAL  # 0.6 is below b's own threshold
    assert agreement == pytest.approx(1 / 3)


def test_ensemble_members_are_scored_on_the_same_faces_as_the_track(shipped):
    from deepscan.detectors import create_detector
    from deepscan.reliability import JointRange, ReliableRange
    from deepscan.scan import FaceResult, Judge, Member, Scanner

    judge = Judge([Member(create_detector("tiny_a")), Member(create_detector("tiny_b"))], 0.5, "default",
                  is_ensemble=True)
    scanner = Scanner.__new__(Scanner)  # only the verdict step: no face detector, no device
    scanner.judge, scanner.reliable_range = judge, JointRange.of([(32, ReliableRange(min_face_px=64))])
    faces = [
        FaceResult(0, 0.0, 1, (0, 0, 20, 20), 0.9, fake_probability=0.9, outside_range=["too small"],
                   member_probabilities={"tiny_a": 0.95, "tiny_b": 0.85}),
        FaceResult(1, 0.5, 1, (0, 0, 90, 90), 0.9, fake_probability=0.2, outside_range=[],
                   member_probabilities={"tiny_a": 0.3, "tiny_b": 0.1}),
    ]
    track = scanner._track(1, faces)
    assert track.score == pytest.approx(0.2) and track.label == REAL and track.share_outside_range == 0.5
    assert track.members["tiny_a"]["score"] == pytest.approx(0.3)  # not the median 0.625 of both faces
    assert track.members["tiny_b"]["score"] == pytest.approx(0.1) and track.agreement == 1.0
