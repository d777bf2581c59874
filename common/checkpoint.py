"""Checkpoint directories written atomically and read without pickle.

A checkpoint is a directory `step-NNNNNNNN` holding safetensors files (tensors) and JSON files (everything
else), plus `manifest.json` with the SHA-256 of every file. It is written under a temporary name and
renamed into place, so a crash never leaves a half-written checkpoint that looks like the latest; a file
that changed after writing fails its checksum and the checkpoint is refused with a message that says so.

Nested states (optimizer, scheduler, RNG) are split into a JSON skeleton and a flat tensor table, so no
loader ever has to unpickle anything.

Permissions: every file of a checkpoint or model directory is `0666 & ~umask` and every directory
`0777 & ~umask` (0644 / 0755 under the usual umask 022), like any file a program creates. safetensors writes
0600 and `mkdtemp` 0700, which on a shared filesystem would hide the files from the other learner ranks'
users and from a colleague's evaluation job; `write_manifest`, which every such directory goes through once
complete, sets the modes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from common.errors import CheckpointError

MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"
_UMASK_LOCK = threading.Lock()


def flatten_state(obj: Any, prefix: str = "s") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON skeleton and named tensors (torch state_dicts use int keys)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {_TENSOR: path}
        if isinstance(node, dict):
            if all(isinstance(k, int) for k in node) and node:
                return {_INTKEYS: [[k, walk(v, f"{path}.{k}")] for k, v in node.items()]}
            if not all(isinstance(k, str) for k in node):
                raise CheckpointError(f"state key types {sorted({type(k).__name__ for k in node})} at {path}")
            return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise CheckpointError(f"cannot store a {type(node).__name__} at {path} without pickle")

    return walk(obj, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _TUPLE in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton[_TUPLE])
        if _INTKEYS in skeleton:
            return {int(k): unflatten_state(v, tensors) for k, v in skeleton[_INTKEYS]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(directory: Path, name: str, state: Any) -> None:
    """`name.json` (skeleton) and, if the state holds tensors, `name.safetensors`."""
    skeleton, tensors = flatten_state(state)
    (directory / f"{name}.json").write_text(json.dumps(skeleton))
    if tensors:
        save_file(tensors, str(directory / f"{name}.safetensors"))


def load_state(directory: Path, name: str) -> Any:
    path = directory / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: missing {name}.json")
    tensor_file = directory / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return unflatten_state(json.loads(path.read_text()), tensors)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


Writer = Callable[[Path], None]


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory` (relative paths), except a manifest itself."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {str(p.relative_to(directory)): _sha256(p) for p in files}


def current_umask() -> int:
    """This process's umask, read without changing it (Linux reports it in /proc; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(directory: Path) -> None:
    """Give `directory` and everything under it the modes a plain `open`/`mkdir` would: 0666 / 0777 less the
    umask. A file someone else owns (another rank's user on a shared filesystem) keeps its mode."""
    mask = current_umask()
    for path in [directory, *directory.rglob("*")]:
        if path.is_symlink():
            continue
        mode = (0o777 if path.is_dir() else 0o666) & ~mask
        with contextlib.suppress(PermissionError):
            os.chmod(path, mode)


def write_manifest(directory: Path, **fields: Any) -> None:
    """`manifest.json` with the SHA-256 of every file, so a later reader can tell a damaged copy from ours; the
    directory is complete now, so its modes are set (`apply_umask`)."""
    apply_umask(directory)
    (directory / MANIFEST).write_text(json.dumps({**fields, "files": file_digests(directory)}, indent=1))


def remove_partial_checkpoints(root: Path) -> None:
    """Delete temporary directories a writer killed mid-checkpoint left behind (one writer per run_dir)."""
    if root.is_dir():
        for stale in root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)


def write_checkpoint(root: Path, step: int, parts: dict[str, Any | Writer], keep_last: int | None = None) -> Path:
    """Write `parts` as one checkpoint directory.

    A part is either a state (stored by `save_state`) or a writer called with the subdirectory `name/`,
    which is how the model goes in as an HF `save_pretrained` directory that `from_pretrained` reads.
    Pruning to `keep_last` never deletes the checkpoint just written, whatever the other step numbers are.
    """
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_checkpoints(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{step_dir_name(step)}-", dir=root))
    try:
        for name, state in parts.items():
            if callable(state):
                (tmp / name).mkdir()
                state(tmp / name)
            else:
                save_state(tmp, name, state)
        write_manifest(tmp, step=step)
        final = root / step_dir_name(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last:
        others = [p for p in list_checkpoints(root) if p != final]
        for old in others[: max(0, len(others) - (keep_last - 1))]:
            shutil.rmtree(old)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (those with a manifest), oldest first; temporary directories are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def verify_manifest(directory: Path, what: str = "checkpoint") -> dict[str, Any]:
    """Check presence and checksums of every file listed in the manifest; return the manifest."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{what} {directory}: no {MANIFEST} (incomplete or not a {what})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{what} {directory}: {MANIFEST} is not valid JSON") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(f"{what} {directory}: {MANIFEST} lists no files with checksums (malformed)")
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{what} {directory}: missing {name}")
        if _sha256(path) != digest:
            raise CheckpointError(f"{what} {directory}: {name} is corrupt (checksum mismatch)")
    return manifest


def verify_checkpoint(directory: Path) -> dict[str, Any]:
    return verify_manifest(directory)


def read_checkpoint(directory: Path, names: list[str]) -> dict[str, Any]:
    """Verify the whole checkpoint, then load the requested parts (each must be listed in the manifest)."""
    files = verify_checkpoint(directory)["files"]
    for name in names:
        if f"{name}.json" not in files:
            raise CheckpointError(f"checkpoint {directory}: {MANIFEST} does not list {name}.json")
    return {name: load_state(directory, name) for name in names}
