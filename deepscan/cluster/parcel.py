"""What travels to the nodes so that each builds the driver's judge, and checks on its own disk that it did.

A :class:`JudgeParcel` holds, per member of the driver's :class:`deepscan.scan.Judge`, what a node needs to build
that detector as the driver has it, and the sha256 its weights must have:

- weights shipped with deepscan: the node resolves its own bundled copy (checked against its ``SHA256SUMS``) and its
  digest must equal the driver's: a node with another deepscan install is refused, never used;
- weights from a file or the Hugging Face hub: the driver's bytes (and model card) travel once through Ray's object
  store, are written on the node, hashed there and must match;
- no weights (an untrained detector): the driver's random initial state travels, so that every node scores with the
  same random network, as one machine would.

The threshold, its source and whether the judge is an ensemble travel as they are: the verdicts are the driver's.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.cluster.connect import ClusterError

if TYPE_CHECKING:
    from deepscan.scan import Judge


class WeightsDiffer(ClusterError):
    """A node's weights are not the driver's (another install, altered files): that node does not scan."""


@dataclass(frozen=True)
class MemberParcel:
    name: str  # the detector
    source: str  # "shipped", "file", "hub" or "none", as the driver resolved it
    sha256: str | None
    card_sha256: str | None
    file_name: str | None  # the weights' file name; a model card travels as the sibling the node will look for
    weights: object = None  # ObjectRef of the weights' bytes (file and hub sources)
    card: object = None  # ObjectRef of the model card's bytes, when there is one
    initial_state: object = None  # ObjectRef of the untrained detector's state dict


@dataclass(frozen=True)
class JudgeParcel:
    members: tuple[MemberParcel, ...]
    threshold: float
    threshold_source: str
    is_ensemble: bool
    trained: bool


def pack_judge(judge: "Judge") -> JudgeParcel:
    """The driver's side: each member's weights by reference (``ray.put`` once; every node reads the same object)."""
    import ray

    members = []
    for member in judge.members:
        weights = member.weights
        parcel = MemberParcel(
            name=member.name, source=weights.source, sha256=weights.sha256, card_sha256=weights.card_sha256,
            file_name=weights.path.name if weights.path else None,
        )
        if weights.path is None:
            state = {key: tensor.detach().cpu() for key, tensor in member.detector.state_dict().items()}
            parcel = _with(parcel, initial_state=ray.put(state))
        elif weights.source != "shipped":
            card = ray.put(Path(weights.card_path).read_bytes()) if weights.card_path else None
            parcel = _with(parcel, weights=ray.put(Path(weights.path).read_bytes()), card=card)
        members.append(parcel)
    return JudgeParcel(tuple(members), judge.threshold, judge.threshold_source, judge.is_ensemble, judge.trained)


def _with(parcel: MemberParcel, **changes) -> MemberParcel:
    from dataclasses import replace

    return replace(parcel, **changes)


def unpack_judge(parcel: JudgeParcel, host: str) -> tuple["Judge", list[dict]]:
    """The node's side: the judge, built and checked here, and what was verified (one entry per member). Raises
    WeightsDiffer when a digest differs, and any WeightsError of building the detector."""
    from deepscan.scan import Judge, Member

    members, verified = [], []
    for member_parcel in parcel.members:
        detector, resolved = _build_member(member_parcel, host)
        members.append(Member(detector, resolved))
        verified.append({"member": member_parcel.name, "source": member_parcel.source, "sha256": resolved.sha256,
                         "card_sha256": resolved.card_sha256})
    judge = Judge(members, parcel.threshold, parcel.threshold_source, is_ensemble=parcel.is_ensemble,
                  trained=parcel.trained)
    return judge, verified


def _build_member(parcel: MemberParcel, host: str):
    import ray

    from deepscan.detectors import get_config
    from deepscan.model_card import card_path_for
    from deepscan.weights import ResolvedWeights, build_detector, resolve_detector_weights, resolve_weights

    if parcel.source == "none":
        detector, resolved = build_detector(parcel.name, resolved=ResolvedWeights(None, "none", None))
        detector.load_state_dict(ray.get(parcel.initial_state))
        return detector, resolved
    if parcel.source == "shipped":
        resolved = resolve_detector_weights(get_config(parcel.name))
        _check(parcel, resolved, host, "its deepscan install's bundled")
        return build_detector(parcel.name, resolved=resolved)
    # Written where only this process looks, read into the detector, then removed: the node keeps no copy.
    folder = Path(tempfile.mkdtemp(prefix="deepscan-weights-"))
    try:
        path = folder / parcel.file_name
        path.write_bytes(ray.get(parcel.weights))
        if parcel.card is not None:
            card_path_for(path).write_bytes(ray.get(parcel.card))
        resolved = resolve_weights(None, path)
        _check(parcel, resolved, host, "the received")
        return build_detector(parcel.name, resolved=resolved)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check(parcel: MemberParcel, resolved, host: str, which: str) -> None:
    for what, expected, found in (("weights", parcel.sha256, resolved.sha256),
                                  ("model card", parcel.card_sha256, resolved.card_sha256)):
        if expected != found:
            raise WeightsDiffer(
                f"node {host}: {which} {parcel.name} {what} (sha256 {_short(found)}) differ from the driver's "
                f"(sha256 {_short(expected)}): install the same deepscan, with the same weights, on every node"
            )


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "none"
