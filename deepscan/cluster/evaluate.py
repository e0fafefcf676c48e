"""``deepscan evaluate --ray``: the cluster fills evaluation's two caches; the evaluation then runs on the driver.

Evaluation computes its metrics from two caches, which is where its work is, and where a cluster can take it over
without the evaluation itself changing:

1. faces (per media file): every media file of DATA and ``--val`` goes to a detector actor, one file per call as a
   scan hands them out, and the actor extracts its faces into the face cache (``deepscan.data.face_cache``) on its
   node. The cache must be on a path every node mounts (``--cache-dir``; checked on every node before anything is
   sent); its entries are written to a temporary folder and renamed, so many writers are safe.
2. logits (per batch): every (detector, face, perturbation) the evaluation will score and the score cache lacks is
   scored by an actor, through evaluation's own :func:`deepscan.evaluate.scores.sample_logits` (the same loading,
   perturbation seeds and batches), and the driver writes the logits into its score cache. SQLite stays on the driver:
   it is not safe with many writers over a network mount.

Then the evaluation (``deepscan.evaluate.evaluation.evaluate``) runs as on one machine: it finds every face and every
logit in its caches and computes the metrics, tables and files exactly as it would have. What to score, under which
cache key, at which extraction size and under which conditions comes from ``deepscan.evaluate.request`` itself; only
the listing of the media files mirrors ``collect_samples``, and a drift there costs time, never a number: whatever
the caches lack, the driver computes as before. Untrained detectors (whose random logits are never cached) and
``--no-score-cache`` (a cache that lives inside the run) leave the scoring to the driver; their faces still come from
the cluster.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from deepscan.cluster.connect import ClusterError, alive_nodes, import_ray, join, leave, plan_actors
from deepscan.cluster.worker import one_line

if TYPE_CHECKING:
    from deepscan.cluster.scan import ClusterOptions
    from deepscan.evaluate.request import EvaluateRequest

BATCHES_PER_CALL = 4  # faces per scoring call: this many batches, so that a call outweighs its round trip


@dataclass
class Warmed:
    """What the cluster did for an evaluation."""

    media_files: int = 0
    unreadable: int = 0  # files an actor could not read (the evaluation skips and counts them, as without a cluster)
    logits: int = 0  # logits scored on the cluster and written into the driver's score cache
    lost_calls: int = 0  # calls whose actor was gone for good: their work is left to the driver


class EvaluationWorker:
    """The evaluation's actor body: the detectors to score with (verified on its node, as a scan's), and a face
    detector made on the first file that needs one."""

    def __init__(self, parcel, options: "EvaluateRequest", marker: str) -> None:
        import socket

        import ray
        import torch

        from deepscan.runtime import face_cache_dir

        self.host = socket.gethostname()
        self.options = options
        self.face_dir = face_cache_dir(options.cache_dir)
        self.detectors: list = []
        self.face_finder = None
        self.refusal: str | None = None
        self.verified: list[dict] = []
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        if not Path(marker).exists():
            self.refusal = (f"node {self.host} does not see the cache folder {self.face_dir}: give --cache-dir a path "
                            "every node mounts")
            return
        if parcel is None:  # no trained detector: only faces to find
            return
        try:
            from deepscan.cluster.parcel import unpack_judge
            from deepscan.runtime import select_device

            judge, self.verified = unpack_judge(parcel, self.host)
            device = select_device(options.device)
            # As evaluation moves its detectors: the same layout gives the same logits.
            self.detectors = [member.detector.to(device).eval() for member in judge.members]
        except Exception as error:  # noqa: BLE001 - the driver hears why in one line
            self.refusal = one_line(error)

    def ready(self) -> dict:
        return {"host": self.host, "pid": os.getpid(), "refusal": self.refusal, "weights_verified": self.verified}

    def extract(self, path: str, kind: str, params) -> bool:
        """Faces of one media file into the shared face cache; False when the file cannot be read."""
        from deepscan.data.face_cache import FaceCache
        from deepscan.media.errors import MediaError

        def face_finder():  # made on the first file the cache lacks, as evaluation makes it
            if self.face_finder is None:
                from deepscan.media.faces import FaceDetector

                self.face_finder = FaceDetector(min_score=params.min_score)
            return self.face_finder

        try:
            FaceCache(self.face_dir).faces_for(Path(path), kind, params, face_finder)
        except (MediaError, OSError):
            return False
        return True

    def logits(self, member: int, samples: list, condition: tuple[str, float]):
        from deepscan.evaluate.scores import ScoreCache, sample_logits

        return sample_logits(self.detectors[member], None, samples, condition, ScoreCache(None),
                             batch_size=self.options.batch_size)


def _members(options: "EvaluateRequest"):
    """Every detector the evaluation will score with, once each (an ensemble's members too), built on the driver as
    evaluation builds them, with the logit cache key evaluation files their logits under. The options are checked
    as the evaluation checks them, before anything is sent."""
    from deepscan.ensemble import ENSEMBLE
    from deepscan.evaluate.request import resolve_methods
    from deepscan.evaluate.scores import logit_cache_key, weights_architecture
    from deepscan.scan import Member
    from deepscan.weights import build_detector

    wanted = []
    for method, _config, resolved in resolve_methods(options):
        wanted.extend(resolved.members if method == ENSEMBLE else [(method, resolved)])  # an ensemble: its plan
    members, keys = [], []
    for name, resolved in wanted:
        if not resolved.trained:
            continue  # untrained logits are random and never cached: the driver scores them
        detector, resolved = build_detector(name, resolved=resolved)
        key = logit_cache_key(resolved.sha256, detector.config.input_size, weights_architecture(resolved))
        if key not in keys:
            members.append(Member(detector, resolved))
            keys.append(key)
    return members, keys


def _media(options: "EvaluateRequest"):
    """(path, kind, extraction parameters) of every media file, as ``collect_samples`` lists and extracts them."""
    from deepscan.data.framing import DEFAULT_CACHE_MARGIN, DEFAULT_MARGIN, extraction_params
    from deepscan.data.sources import DataError, list_media
    from deepscan.evaluate.request import extraction_input_size
    from deepscan.evaluate.samples import EvaluationError, dataset_source

    input_size = extraction_input_size()
    media = []
    for part, data in (("test", options.data), ("val", options.val)):
        for path in data:
            try:
                items = list_media(dataset_source(Path(path), part, options.compression))
            except DataError as error:
                raise EvaluationError(str(error)) from None
            media.extend((str(item.path), item.kind, extraction_params(
                item, input_size=input_size, margin=DEFAULT_MARGIN, cache_margin=DEFAULT_CACHE_MARGIN,
                frames_per_video=options.frames_per_video)) for item in items)
    return media, input_size


def warm_evaluation(options: "EvaluateRequest", cluster: "ClusterOptions",
                    notice: Callable[[str], None] | None = None) -> Warmed:
    """Fill the face cache and the score cache of ``options``' evaluation on the cluster (see the module
    docstring); ``evaluate(options, ...)`` afterwards finds them filled."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from deepscan.cluster.parcel import pack_judge
    from deepscan.evaluate.request import perturb_conditions
    from deepscan.runtime import face_cache_dir
    from deepscan.scan import Judge

    from deepscan.evaluate.samples import EvaluationError

    ray = import_ray()
    notice = notice or (lambda line: None)
    for path in [*options.data, *options.val]:
        if not path.exists():
            raise EvaluationError(f"{path}: no such file or folder")
    members, keys = _members(options)
    media, input_size = _media(options)
    face_dir = face_cache_dir(options.cache_dir)
    face_dir.mkdir(parents=True, exist_ok=True)
    # A file only this run writes: a node that sees it sees the cache the driver reads.
    marker = face_dir / f".deepscan-cluster-{uuid.uuid4().hex}"
    connection = join(cluster.address, local_cpus=cluster.local_cpus)
    actors = []
    try:
        marker.touch()
        # Only the detectors travel (verified on each node); the threshold is the evaluation's business.
        parcel = pack_judge(Judge(members, 0.5, "evaluation", trained=True)) if members else None
        slots = plan_actors(alive_nodes(), options.device, cluster.cpus_per_actor)
        worker = ray.remote(EvaluationWorker)
        actors = [worker.options(num_cpus=slot.cpus, num_gpus=slot.gpus, max_restarts=-1,
                                 scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=True)
                                 ).remote(parcel, options, str(marker)) for slot in slots]
        usable = _usable(ray, actors, notice)
        notice(f"{len(usable)} evaluation actor(s) of {connection.joined}")
        warmed = Warmed(media_files=len(media))
        extractions = [(None, "extract", (path, kind, params)) for path, kind, params in media]
        for _, readable in _spread(ray, usable, extractions, warmed):
            warmed.unreadable += not readable
        if options.use_score_cache and members:
            from deepscan.evaluate.runner import CLEAN

            conditions = [CLEAN, *[c for c in perturb_conditions(options.perturb) if c != CLEAN]]
            _score(ray, usable, options, keys, conditions, input_size, warmed)
        elif members:
            notice("--no-score-cache: the faces come from the cluster, the scores from this machine")
        return warmed
    finally:
        from ray.exceptions import RayError

        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except RayError:  # gone with its node already
                pass
        leave(connection)
        marker.unlink(missing_ok=True)


def _usable(ray, actors: list, notice) -> list:
    """The actors that can work (all of them answered); ClusterError with the first reason when none can."""
    from ray.exceptions import RayError

    usable, reasons = [], []
    for actor in actors:
        try:
            info = ray.get(actor.ready.options(max_task_retries=-1).remote())
        except RayError as error:
            info = {"refusal": f"lost: {one_line(error)}"}
        if info["refusal"]:
            reasons.append(info["refusal"])
            notice(f"an evaluation actor refused: {info['refusal']}")
            ray.kill(actor, no_restart=True)
        else:
            usable.append(actor)
    if not usable:
        raise ClusterError(reasons[0])
    return usable


def _spread(ray, actors: list, calls: Iterable[tuple[object, str, tuple]], warmed: Warmed,
            in_flight_per_actor: int = 2):
    """Each call (tag, actor method, arguments) on the actors, a few in flight on each; yields (tag, answer) as the
    answers come. A call whose actor is gone for good is dropped (counted in ``warmed.lost_calls``): the driver does
    that work later."""
    from ray.exceptions import RayError

    pending = list(calls)[::-1]
    in_flight: dict = {}
    load = {actor: 0 for actor in actors}
    while pending or in_flight:
        for actor in list(load):
            while pending and load[actor] < in_flight_per_actor:
                tag, method, arguments = pending.pop()
                # Idempotent work: retried through every restart of the actor.
                reference = getattr(actor, method).options(max_task_retries=-1).remote(*arguments)
                in_flight[reference] = (tag, actor)
                load[actor] += 1
        if not in_flight:
            warmed.lost_calls += len(pending)
            return
        (done,), _ = ray.wait(list(in_flight), num_returns=1)
        tag, actor = in_flight.pop(done)
        load[actor] -= 1
        try:
            answer = ray.get(done)
        except RayError:
            warmed.lost_calls += 1
            load.pop(actor, None)  # gone for good: no more work for it
            continue
        yield tag, answer


def _score(ray, actors, options, keys, conditions, input_size, warmed: Warmed) -> None:
    from deepscan.evaluate.samples import collect_samples
    from deepscan.evaluate.scores import ScoreCache
    from deepscan.runtime import face_cache_dir, score_cache_path

    face_dir = face_cache_dir(options.cache_dir)
    # Every face is cached by now: this reads the cache (as the evaluation will), it extracts nothing.
    test = collect_samples(options.data, "test", input_size=input_size, frames_per_video=options.frames_per_video,
                           cache_dir=face_dir, compression=options.compression).samples
    val = (collect_samples(options.val, "val", input_size=input_size, frames_per_video=options.frames_per_video,
                           cache_dir=face_dir, compression=options.compression).samples if options.val else [])
    wanted = [(test, condition) for condition in conditions] + ([(val, conditions[0])] if val else [])
    chunk = options.batch_size * BATCHES_PER_CALL
    cache = ScoreCache(score_cache_path(options.cache_dir))
    try:
        calls = []
        for member, key in enumerate(keys):
            for samples, condition in wanted:
                known = cache.get(key, [sample.key for sample in samples], *condition)
                missing = [sample for sample in samples if sample.key not in known]
                for start in range(0, len(missing), chunk):
                    part = missing[start : start + chunk]
                    # Answers come in any order: each call is tagged with where its logits go.
                    calls.append(((key, [sample.key for sample in part], condition), "logits", (member, part, condition)))
        for (key, sample_keys, condition), logits in _spread(ray, actors, calls, warmed):
            cache.put(key, dict(zip(sample_keys, logits.tolist())), *condition)
            warmed.logits += len(sample_keys)
    finally:
        cache.close()
