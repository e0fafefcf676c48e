"""The human half of a model card (``<name>.md``, and ``ensemble.md``), made from its JSON half so that the two
never disagree: one builder per section, each a list of lines."""

from __future__ import annotations

import json
from pathlib import Path


def _header(card: dict) -> list[str]:
    detector = card["detector"]
    return [
        f"# {detector['name']} — model card",
        "",
        f"Implements: {detector['paper']}. Built with {json.dumps(detector['kwargs'])}, input {detector['input_size']} px, "
        f"{detector['parameters']:,} parameters. Weights: `{card['weights']['file']}` (fp16 safetensors, sha256 "
        f"`{card['weights']['sha256']}`). Trained on research-only third-party data "
        f"({', '.join(source['name'] for source in card['data']['train'])}; see `../shared/data/SOURCES.md`): "
        "**for research use**.",
        "",
    ]


def _data(card: dict) -> list[str]:
    lines = [
        "## Data and splits",
        "",
        "Protocol: `deepscan/train/protocol.py` (split by group, never by file; a group's side is fixed by a hash "
        "of its name). Counts are faces after face detection.",
        "",
        "| part | source | real faces | fake faces | media without a face |",
        "|---|---|---|---|---|",
    ]
    for part in ("train", "val"):
        for source in card["data"][part]:
            lines.append(
                f"| {part} | {source['name']} | {source['real_faces']} | {source['fake_faces']} | {source.get('faceless', 0)} |"
            )
    sbi = card["data"].get("pseudo_fakes") or {}
    protocol = card.get("protocol", {})
    return lines + [
        "",
        (f"Plus SBI pseudo-fakes (Shiohara and Yamasaki, CVPR 2022), {sbi['ratio']:g} per real training face, "
         f"made afresh each epoch{_part_blends(sbi)}; " if sbi.get("ratio") else "No SBI pseudo-fakes; ")
        + f"{card['data']['train_entries']} training and {card['data']['val_entries']} validation "
        f"entries. Never trained on, at any stage: {', '.join(protocol.get('never_trained_on', [])) or '?'}; "
        f"partly held out (their test share): {', '.join(protocol.get('partly_held_out', [])) or 'none'}.",
        "",
    ]


def _part_blends(sbi: dict) -> str:
    share = sbi.get("parts") or 0
    return f", {share:.0%} of them blended over facial parts (eyes, nose, mouth) only" if share else ""


def _started_from(card: dict) -> str:
    """Whole-detector weights the run started from (``--init``), which the recipe alone does not reproduce."""
    init = (card.get("start") or {}).get("init")
    if not init:
        return ""
    spec = init["spec"]
    # A path on the training machine means nothing to a reader: its file name and sha256 identify the weights.
    given = spec if spec == "shipped" or spec.startswith("hf://") else Path(spec).name
    return (f" Fine-tuned from whole-detector weights with sha256 `{init['sha256']}` (given as `{given}`; "
            "the recipe says where they come from), not from the ImageNet trunks alone.")


def _training(card: dict) -> list[str]:
    from deepscan.evaluate.report import format_number

    training = card["training"]
    planned = training.get("lr_schedule_epochs")
    schedule = (f" (its cosine learning-rate schedule was planned for {planned} epochs: stopped before it annealed)"
                if planned and planned > training["epochs"] else "")
    return [
        "## Training",
        "",
        f"Recipe `{card['shipped_from']['recipe']}` (sha256 `{card['recipe']['sha256']}`); {training['epochs']} epochs"
        f"{schedule}, {training['seconds'] / 60:.0f} minutes on {training['device']} "
        f"({card.get('hardware') or training.get('device_name') or 'this project’s 2-core CPU'}); "
        f"checkpoint chosen on validation AUC: epoch {card['validation']['epoch']} "
        f"(val AUC {format_number(card['validation']['metrics'].get('auc'))}).{_started_from(card)}",
        "",
    ]


def _validation_auc(card: dict) -> list[str]:
    measured = card.get("validation_auc")
    if not measured:
        return []
    return [
        "## Validation",
        "",
        f"Frame AUC {measured['auc']:.3f} on {measured['faces']}, at {measured['input_size']} px: the split every "
        f"build is compared on (`{measured['command']}`).",
        "",
    ]


def _calibration(card: dict) -> list[str]:
    from deepscan.evaluate.report import format_number

    calibration = card.get("calibration", {})
    return [
        "## Calibration and threshold",
        "",
        f"P(fake) = sigmoid({calibration.get('scale', 1):.4f} × logit + {calibration.get('bias', 0):.4f}), fitted on "
        f"{calibration.get('fitted_on', '?')}. Verdict threshold {calibration.get('threshold', 0.5):.4f}: "
        f"{calibration.get('threshold_rule', '')} (on validation: false-positive rate {format_number(calibration.get('val_fpr'))}"
        f"{_by_source(calibration)}, true-positive rate {format_number(calibration.get('val_tpr'))}).",
        "",
    ]


def _by_source(calibration: dict) -> str:
    """Each validation source's false-positive rate, where the card has them: " (dfdc 0.048, fairface 0.035)"."""
    from deepscan.evaluate.report import format_number

    rates = calibration.get("val_fpr_by_source") or {}
    return f" ({', '.join(f'{source} {format_number(rate)}' for source, rate in rates.items())})" if rates else ""


def _reliability(card: dict) -> list[str]:
    from deepscan.evaluate.report import format_number

    reliability = card.get("reliability", {})
    lines = ["## Where it can be trusted", "", reliability.get("text", "No reliable range measured."), ""]
    if reliability.get("by_face_size"):
        lines += ["| face box (px) | AUC | real faces called fake |", "|---|---|---|"]
        lines += [f"| {row['face_px']} | {format_number(row['auc'])} | {format_number(row['fpr'])} |" for row in reliability["by_face_size"]]
        lines += ["", "| blur sigma | median sharpness | AUC | real faces called fake |", "|---|---|---|---|"]
        lines += [
            f"| {row['blur_sigma']} | {row['median_sharpness']:.1f} | {format_number(row['auc'])} | {format_number(row['fpr'])} |"
            for row in reliability["by_blur"]
        ]
        lines.append("")
    return lines


def _h264_false_alarms(card: dict) -> list[str]:
    from deepscan.evaluate.report import format_number

    measured = card.get("h264_false_alarms")
    if not measured:
        return []
    sources = list(measured["rows"][0]["by_source"])
    lines = [
        "## Real faces after H.264 re-encoding",
        "",
        f"Share of {measured['faces']} called fake at the threshold ({measured['threshold']:.4f}), clean and with "
        f"{measured['encoding']}: `{measured['command']}`.",
        "",
        f"| encoding | all | {' | '.join(sources)} |",
        "|---" * (len(sources) + 2) + "|",
    ]
    for row in measured["rows"]:
        encoding = "clean" if row["crf"] is None else f"H.264 CRF {row['crf']}"
        cells = " | ".join(format_number(row["by_source"].get(source)) for source in sources)
        lines.append(f"| {encoding} | {format_number(row['false_alarms'])} | {cells} |")
    return lines + [""]


def _result_row(key: str, condition: str, result: dict) -> str:
    from deepscan.evaluate.report import format_number, format_rate

    frame, video = result["frame"], result.get("video_median", {})
    ci = frame.get("auc_ci95")
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return (
        f"| {key} | {condition} | {format_number(frame.get('auc'))}{interval} | {format_number(video.get('auc'))} | "
        f"{format_number(frame.get('eer'))} | {format_rate(frame.get('fpr_at_card_threshold'), frame['n_real'])} | "
        f"{format_rate(frame.get('tpr_at_card_threshold'), frame['n_fake'])} |"
    )


def _results(card: dict) -> list[str]:
    lines = [
        "## Results",
        "",
        "Each row is one `deepscan evaluate` run (command below the table); video level is the scan's median per "
        "media file. Rates are at the shipped threshold. The 95 % interval is a percentile bootstrap "
        "that draws whole groups: a DFDC original with its fakes, a DeepFaceLive video's frames, a single file where "
        "the source has no groups.",
        "",
        "| evaluation | condition | frame AUC [95 % CI] | video AUC | frame EER | real faces called fake | fakes caught |",
        "|---|---|---|---|---|---|---|",
    ]
    commands = []
    for key, entry in card.get("metrics", {}).items():
        commands.append(f"- {key}: `{entry['command']}`")
        for method in entry["results"].get("methods", []):
            lines += [_result_row(key, condition, result) for condition, result in method["conditions"].items()]
    return lines + ["", "Commands (from the repository root, after `python -m deepscan.train.protocol`):", "", *commands, ""]


def _known_failures(card: dict) -> list[str]:
    if not card.get("known_failures"):
        return []
    return ["## Known failure modes", "", *[f"- {item}" for item in card["known_failures"]], ""]


SECTIONS = (_header, _data, _training, _validation_auc, _calibration, _reliability, _h264_false_alarms, _results, _known_failures)


def card_markdown(card: dict) -> str:
    """The human half of the model card, made from the JSON half so that the two never disagree."""
    return "\n".join(line for section in SECTIONS for line in section(card))


# --- the ensemble's card -------------------------------------------------------------------------------------------
def _ensemble_header(card: dict) -> list[str]:
    return [
        "# ensemble — model card",
        "",
        f"Members: {', '.join(f'`{name}` (`{name}.md`)' for name in card['members'])}, each with its own shipped "
        "weights, calibration and card. A face's P(fake) is the mean of the members' calibrated P(fake), each member "
        "scoring its own resize of the same face crop; tracks and files are judged from it as from one detector. The "
        "ensemble has no weights of its own: nothing was trained for it, only its threshold was chosen. Its members "
        "were trained on research-only third-party data: **for research use**.",
        "",
    ]


def _ensemble_threshold(card: dict) -> list[str]:
    from deepscan.evaluate.report import format_number

    calibration = card["calibration"]
    return [
        "## Threshold",
        "",
        f"Verdict threshold {calibration['threshold']:.4f} on the mean calibrated P(fake): "
        f"{calibration.get('threshold_rule', '')}, fitted on {calibration.get('fitted_on', '?')} (on validation: "
        f"false-positive rate {format_number(calibration.get('val_fpr'))}{_by_source(calibration)}, true-positive rate "
        f"{format_number(calibration.get('val_tpr'))}).",
        "",
    ]


def _frame_result(card: dict, key: str, condition: str) -> dict | None:
    methods = card.get("metrics", {}).get(key, {}).get("results", {}).get("methods", [])
    return methods[0]["conditions"].get(condition, {}).get("frame") if methods else None


def _compared_cell(frame: dict | None) -> str:
    from deepscan.evaluate.report import format_number

    if frame is None:
        return "not measured"
    rate = frame.get("fpr_at_card_threshold")
    return format_number(frame.get("auc")) + (f" ({100 * rate:.1f} %)" if rate is not None else "")


def _members_compared(card: dict, members: dict[str, dict]) -> list[str]:
    names = list(card["members"])
    lines = [
        "## Against its members",
        "",
        "Frame AUC on the same evaluation, and in brackets the share of real faces called fake at each one's own "
        "threshold: whether combining helps is read here, source by source.",
        "",
        f"| evaluation | condition | ensemble | {' | '.join(names)} |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for key, entry in card.get("metrics", {}).items():
        methods = entry["results"].get("methods", [])
        for condition in methods[0]["conditions"] if methods else ():
            cells = [_compared_cell(_frame_result(card, key, condition))]
            cells += [_compared_cell(_frame_result(members.get(name, {}), key, condition)) for name in names]
            lines.append(f"| {key} | {condition} | {' | '.join(cells)} |")
    return lines + [""]


def ensemble_markdown(card: dict, members: dict[str, dict]) -> str:
    """``ensemble.md`` from ``ensemble.card.json`` and its members' cards (by name; a missing one reads as not
    measured)."""
    sections = (_ensemble_header(card), _ensemble_threshold(card), _members_compared(card, members),
                _h264_false_alarms(card), _results(card), _known_failures(card))
    return "\n".join(line for section in sections for line in section)


# --- the README's table of every shipped detector ------------------------------------------------------------------
# (label, evaluation, condition, what the cell shows): the rows of "What the shipped detectors measured".
README_ROWS = (
    ("DFDC, held-out groups (in-domain)", "in_domain_dfdc_test", "clean", "rates"),
    ("DFDC under JPEG 75", "robustness_dfdc_test", "jpeg@75", "auc"),
    ("DFDC under H.264 CRF 28", "robustness_dfdc_test", "h264@28", "auc"),
    ("DeepFaceLive live swaps (never trained on)", "cross_source_deepfacelive", "clean", "auc"),
    ("Photoshop part-swaps, CIPLAB (never trained on)", "cross_source_photoshop_ciplab", "clean", "auc"),
    ("StyleGAN2 faces vs Unsplash photos (never trained on)", "cross_source_stylegan2", "clean", "auc"),
    ("FairFace, held-out 30 % (real only): called fake", "false_alarms_fairface_test", "clean", "fpr"),
    ("CelebA in-the-wild photos and videos (real only)", "false_alarms_celeba_photos_and_videos", "clean", "fpr"),
    ("talking-head videos (real only)", "false_alarms_talking_heads", "clean", "fpr"),
    ("carphone clip, pristine and compressed (real only, 16 faces)", "false_alarms_carphone", "clean", "fpr"),
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _readme_cell(frame: dict | None, shows: str, best: bool) -> str:
    from deepscan.evaluate.report import format_number

    if frame is None:
        return "not measured"
    if shows == "fpr":
        return _percent(frame.get("fpr_at_card_threshold"))
    auc = format_number(frame.get("auc"))
    auc = f"**{auc}**" if best else auc
    if shows == "rates":
        return f"{auc}; {_percent(frame.get('fpr_at_card_threshold'))} / {_percent(frame.get('tpr_at_card_threshold'))}"
    return auc


def readme_table(cards: dict[str, dict], titles: dict[str, str]) -> str:
    """The README's held-out table, one column per card (in the order given), the best AUC of a row in bold:
    made from the cards so that the README cannot drift from them (a test compares the two)."""
    names = list(cards)
    lines = [f"| test data | {' | '.join(titles.get(name, name) for name in names)} |", "|---|" + "---|" * len(names)]
    for label, key, condition, shows in README_ROWS:
        frames = [_frame_result(cards[name], key, condition) for name in names]
        aucs = [round(frame["auc"], 3) if frame and frame.get("auc") is not None else -1.0 for frame in frames]
        best = max(aucs) if shows != "fpr" else None
        cells = [_readme_cell(frame, shows, auc == best) for frame, auc in zip(frames, aucs)]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)
