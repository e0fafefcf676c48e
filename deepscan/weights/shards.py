"""Detector weights split into safetensors shards of bounded size, with an index; read by the one weights loader.

Why: weights must sometimes travel through channels that cap the size of each file (a lent GPU machine returns
files of at most 16 MiB; a repository may refuse large files). A sharded set is

- ``<name>-00001-of-0000N.safetensors`` ... : plain safetensors files, each at most the limit, each holding whole
  tensors and the same header metadata (so that any one of them still says which detector it belongs to);
- ``<name>.safetensors.index.json``: the format tag, the metadata, every shard's file name, size and sha256, and
  the map from tensor name to shard (``weight_map``, as the Hugging Face convention names it).

The index is what a user names (``--weights ralf.safetensors.index.json``) and what a model card pins (its
``weights.sha256`` is the index's): the index in turn pins every shard by its sha256, so one checksum covers the
set. Weights come from strangers, so reading is strict: a shard must be a plain file name inside the index's own
folder (no path, no ``..``, no link leading out), its sha256 must match, and it must hold exactly the tensors
the index maps to it. Any failure is one line (:class:`deepscan.weights.errors.WeightsError`, or
:class:`deepscan.weights.errors.IntegrityError` for a shard that is not the one the index names).

``python -m deepscan.weights split SRC.safetensors DST.safetensors.index.json --max-mib 15 [--fp16]``
shards a single file; ``join INDEX DST.safetensors`` makes a single file again; ``check INDEX`` verifies a set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from deepscan.runtime import atomic_write, sha256_file
from deepscan.weights.errors import IntegrityError, WeightsError

if TYPE_CHECKING:
    import torch

INDEX_SUFFIX = ".safetensors.index.json"
INDEX_FORMAT = "deepscan.sharded-weights"
INDEX_VERSION = 1
MIB = 1024 * 1024
# Room a tensor's entry takes in a shard's JSON header besides its name: dtype, shape and offsets, generously.
_HEADER_BYTES_PER_TENSOR = 160


def is_index(path: str | os.PathLike) -> bool:
    return str(path).endswith(INDEX_SUFFIX)


def index_path_for(weights: Path) -> Path:
    """``ralf.safetensors`` -> ``ralf.safetensors.index.json`` in the same folder."""
    return weights.with_name(weights.name + ".index.json")


def weights_path_for(index: Path) -> Path:
    """``ralf.safetensors.index.json`` -> ``ralf.safetensors``: the name its model card is found by."""
    return index.with_name(index.name.removesuffix(".index.json"))


@dataclass(frozen=True)
class Shard:
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ShardIndex:
    path: Path
    metadata: dict[str, str]
    shards: tuple[Shard, ...]
    weight_map: dict[str, str]  # tensor name -> shard file

    def tensors_of(self, file: str) -> set[str]:
        return {name for name, shard in self.weight_map.items() if shard == file}


# --- writing ---------------------------------------------------------------------------------------------------


def plan_shards(state: dict[str, torch.Tensor], max_bytes: int, metadata: dict[str, str]) -> list[list[str]]:
    """Tensor names grouped, in order, into shards whose files stay within ``max_bytes`` (header included)."""
    fixed = 8 + len(json.dumps({"__metadata__": metadata})) + 64
    groups: list[list[str]] = []
    size = fixed
    for name, tensor in state.items():
        need = tensor.numel() * tensor.element_size() + len(name.encode()) + _HEADER_BYTES_PER_TENSOR
        if fixed + need > max_bytes:
            raise WeightsError(f"tensor {name} alone takes {need / MIB:.1f} MiB, over the shard limit of "
                               f"{max_bytes / MIB:.1f} MiB: raise the limit")
        if not groups or size + need > max_bytes:
            groups.append([])
            size = fixed
        groups[-1].append(name)
        size += need
    return groups


def save_sharded(
    state: dict[str, torch.Tensor], index_path: Path, metadata: dict[str, str], max_shard_mib: float
) -> str:
    """Write ``state`` as shards of at most ``max_shard_mib`` MiB and their index; returns the index's sha256.

    Every shard is serialised and measured before anything is written, so an oversized shard is never written;
    the shards are written first and the index last, each atomically, so a reader never finds an index whose
    shards are not complete."""
    from safetensors.torch import save

    index_path = Path(index_path)
    if not is_index(index_path):
        raise WeightsError(f"{index_path.name}: a shard index is named <name>{INDEX_SUFFIX}")
    max_bytes = int(max_shard_mib * MIB)
    stem = index_path.name.removesuffix(INDEX_SUFFIX)
    groups = plan_shards(state, max_bytes, metadata)
    blobs = []
    for number, names in enumerate(groups, start=1):
        blob = save({name: state[name].detach().contiguous().cpu() for name in names}, metadata=metadata)
        if len(blob) > max_bytes:  # the header estimate erred: refuse rather than write an oversized file
            raise WeightsError(f"shard {number} would take {len(blob)} bytes, over the limit of {max_bytes}")
        blobs.append((f"{stem}-{number:05d}-of-{len(groups):05d}.safetensors", blob, names))
    for file, blob, _ in blobs:
        atomic_write(index_path.parent / file, blob)
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "metadata": metadata,
        "shards": [{"file": file, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
                   for file, blob, _ in blobs],
        "weight_map": {name: file for file, _, names in blobs for name in names},
    }
    atomic_write(index_path, json.dumps(index, indent=1) + "\n")
    return sha256_file(index_path)


# --- reading ---------------------------------------------------------------------------------------------------


def _plain_name(value: object) -> bool:
    if not isinstance(value, str) or not value or "\\" in value or "\x00" in value:
        return False
    path = PurePosixPath(value)
    return path.name == value and value not in (".", "..") and not value.startswith("/")


def _shard_entry(entry: object, where: str) -> Shard:
    if not isinstance(entry, dict):
        raise WeightsError(f"{where}: each shard is an object with file, sha256 and bytes")
    file, digest, size = entry.get("file"), entry.get("sha256"), entry.get("bytes")
    if not _plain_name(file) or not str(file).endswith(".safetensors"):
        raise WeightsError(f"{where}: shard {str(file)[:80]!r} is not a .safetensors file name inside the index's "
                           "folder; refused (weights come from strangers)")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest)):
        raise WeightsError(f"{where}: shard {file}: sha256 is not 64 hex digits")
    if not isinstance(size, int) or size < 0:
        raise WeightsError(f"{where}: shard {file}: bytes is not a size")
    return Shard(file, digest.lower(), size)


def read_index(index_path: Path) -> ShardIndex:
    """The index, checked: its format, plain shard names, a weight map onto listed shards, text metadata."""
    index_path = Path(index_path)
    name = index_path.name
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{index_path}: weights index not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise WeightsError(f"{name}: not a readable shard index ({type(error).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise WeightsError(f"{name}: not a deepscan shard index (format {INDEX_FORMAT!r} expected)")
    if data.get("version") != INDEX_VERSION:
        raise WeightsError(f"{name}: shard index version {data.get('version')!r} is not {INDEX_VERSION}")
    entries = data.get("shards")
    if not isinstance(entries, list) or not entries:
        raise WeightsError(f"{name}: lists no shard")
    shards = tuple(_shard_entry(entry, name) for entry in entries)
    files = [shard.file for shard in shards]
    if len(set(files)) != len(files):
        raise WeightsError(f"{name}: a shard is listed twice")
    weight_map, metadata = data.get("weight_map"), data.get("metadata", {})
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v in files for v in weight_map.values()):
        raise WeightsError(f"{name}: weight_map must map every tensor to a listed shard")
    text_only = isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    if not text_only:
        raise WeightsError(f"{name}: metadata must map text to text")
    return ShardIndex(index_path, dict(metadata), shards, dict(weight_map))


def shard_path(index: ShardIndex, shard: Shard) -> Path:
    """Where a shard is: in the index's folder, and still there once links are followed."""
    folder = index.path.parent
    path = folder / shard.file
    real_folder = os.path.realpath(folder)
    if os.path.commonpath([os.path.realpath(path), real_folder]) != real_folder:
        raise WeightsError(f"{index.path.name}: shard {shard.file} leads outside the index's folder; refused")
    if not path.is_file():
        raise WeightsError(f"{index.path.name}: shard {shard.file} is missing")
    return path


def load_sharded(index_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a sharded set and the index's metadata; each shard verified by its sha256 and contents."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    index = read_index(index_path)
    state: dict[str, torch.Tensor] = {}
    for shard in index.shards:
        blob = shard_path(index, shard).read_bytes()
        if hashlib.sha256(blob).hexdigest() != shard.sha256:
            raise IntegrityError(f"{index.path.name}: shard {shard.file} fails its sha256 check (altered or "
                                 "replaced); refusing the weights")
        try:
            tensors = load(blob)
        except SafetensorError as error:
            raise WeightsError(f"{shard.file}: not a readable safetensors file ({error})") from None
        if set(tensors) != index.tensors_of(shard.file):
            raise WeightsError(f"{shard.file}: holds other tensors than the index maps to it")
        state.update(tensors)
    return state, index.metadata


def verify_shards(index_path: Path) -> ShardIndex:
    """The index, with every shard present, inside its folder and matching its sha256 (nothing loaded)."""
    index = read_index(index_path)
    for shard in index.shards:
        if sha256_file(shard_path(index, shard)) != shard.sha256:
            raise IntegrityError(f"{index.path.name}: shard {shard.file} fails its sha256 check (altered or "
                                 "replaced); refusing the weights")
    return index


# --- command line: split a single file, join a sharded set ----------------------------------------------------


def split_file(source: Path, index_path: Path, max_shard_mib: float, fp16: bool) -> str:
    """Shard a single safetensors file (optionally casting floating-point tensors to fp16); the index's sha256."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(source), "pt") as handle:
            metadata = dict(handle.metadata() or {})
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{source}: not a readable safetensors file ({type(error).__name__})") from None
    if fp16:
        state = {name: t.half() if t.is_floating_point() and t.dtype != torch.float16 else t
                 for name, t in state.items()}
    return save_sharded(state, index_path, metadata, max_shard_mib)


def join_file(index_path: Path, target: Path) -> str:
    """One safetensors file from a verified sharded set; its sha256."""
    from safetensors.torch import save

    state, metadata = load_sharded(index_path)
    atomic_write(target, save(state, metadata=metadata))
    return sha256_file(target)


def main(argv: list[str] | None = None) -> int:
    from deepscan.errors import DeepscanError

    parser = argparse.ArgumentParser(prog="python -m deepscan.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split = commands.add_parser("split", help="shard a .safetensors file")
    split.add_argument("source", type=Path)
    split.add_argument("index", type=Path, help=f"<name>{INDEX_SUFFIX} to write (shards go beside it)")
    split.add_argument("--max-mib", type=float, default=15.0)
    split.add_argument("--fp16", action="store_true", help="cast floating-point tensors to float16")
    join = commands.add_parser("join", help="make one .safetensors file of a sharded set")
    join.add_argument("index", type=Path)
    join.add_argument("target", type=Path)
    check = commands.add_parser("check", help="verify every shard of a set against its index")
    check.add_argument("index", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            digest = split_file(args.source, args.index, args.max_mib, args.fp16)
            print(f"{args.index} ({len(read_index(args.index).shards)} shards), sha256 {digest}")
        elif args.command == "join":
            print(f"{args.target}, sha256 {join_file(args.index, args.target)}")
        else:
            index = verify_shards(args.index)
            sizes = ", ".join(f"{shard.file} {shard.bytes / MIB:.2f} MiB" for shard in index.shards)
            print(f"{args.index}: {len(index.weight_map)} tensors in {len(index.shards)} verified shards ({sizes})")
    except DeepscanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
