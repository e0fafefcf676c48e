"""The catalog ``deepscan models`` lists: every registered detector, and the ensemble, with its paper, input size,
parameters, cost per face, and where its trained weights are. Never downloads: listing stays quick and offline."""

from __future__ import annotations

# What `scan` and `explain` use without --method: the shipped detector best on the forgery sources it never saw
# among those that scan at least 5 faces/s on a 2-core CPU; where none has a clear lead there, the one that calls
# fewer real faces fake: first the validation reals after H.264 re-encoding (all four CRFs counted together), then
# the held-out real footage of those unseen sources. PEL and MC-LCR are level on the unseen sources and ahead of the
# others; PEL calls 55 of the 1,556 re-encoded validation reals fake where MC-LCR calls 69, and 4.5 % of the
# DeepFaceLive demos' real halves where MC-LCR calls 12.5 % (README, "What the shipped detectors measured"). It scans
# about 11 faces/s.
DEFAULT_METHOD = "pel"


def detector_row(name: str) -> dict:
    """One registered detector as the catalog lists it: the build its shipped weights have, when they ship."""
    import torch

    from deepscan.detectors import create_detector, get_config
    from deepscan.weights import WEIGHTS_AT_HAND, shipped_build, weights_status

    config = get_config(name)
    status = weights_status(config)  # never downloads: listing must stay quick and offline
    # Shipped weights may be of another build than the paper default (backbone, input size): list that build.
    built = shipped_build(config) if status == "shipped" else {}
    with torch.device("meta"):  # shapes only: counting needs no memory and no initialisation
        parameters = create_detector(name, **built.get("kwargs", {})).count_parameters()
    input_size = built.get("input_size", config.input_size)
    if built.get("kwargs"):  # another build (a lighter backbone, say): its own cost, counted on one face
        gflops = counted_gflops(name, built["kwargs"], input_size)
    else:  # stated at the config's input size; convolutional cost grows with the pixels
        gflops = round(config.gflops * (input_size / config.input_size) ** 2, 2) if config.gflops else None
    return {
        "name": name,
        "paper": config.paper,
        "input_size": input_size,
        "parameters": parameters,
        "gflops_per_face": gflops,
        "weights_available": status in WEIGHTS_AT_HAND,
        "weights": status,
    }


def counted_gflops(name: str, kwargs: dict, input_size: int) -> float:
    """GFLOP of one face through detector ``name`` built with ``kwargs``, counted by torch on a forward pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deepscan.detectors import create_detector

    detector = create_detector(name, **kwargs).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        detector(torch.zeros(1, 3, input_size, input_size))
    return round(counter.get_total_flops() / 1e9, 2)


def ensemble_row(rows: list[dict]) -> dict:
    """The ensemble as the catalog lists it, from the detectors' rows: its likely members, their sums."""
    from deepscan.ensemble import ENSEMBLE, ENSEMBLE_PAPER, likely_members

    members = likely_members({row["name"]: row["weights"] for row in rows})
    chosen = [row for row in rows if row["name"] in members]
    return {
        "name": ENSEMBLE,
        "paper": ENSEMBLE_PAPER,
        "input_size": None,  # each member at its own
        "parameters": sum(row["parameters"] for row in chosen),
        "gflops_per_face": (round(sum(row["gflops_per_face"] for row in chosen), 2)
                            if members and all(row["gflops_per_face"] for row in chosen) else None),
        "weights_available": bool(members),
        "weights": f"members: {', '.join(members)}" if members else "no member: no detector has trained weights",
        "members": members,
    }


def catalog() -> list[dict]:
    """Every registered detector's row, in registry order, and the ensemble's last."""
    from deepscan.detectors import list_detectors

    rows = [detector_row(name) for name in list_detectors()]
    rows = [*rows, ensemble_row(rows)]
    for row in rows:
        row["default"] = row["name"] == DEFAULT_METHOD
    return rows
