"""Folders in LFW layout and LFW pairs files (View 1 `pairsDevTrain.txt` / `pairsDevTest.txt`, View 2 `pairs.txt`).

Layout: `<root>/images/<Name>/<Name>_NNNN.jpg` (the shared View 1 copy) or `<root>/<Name>/<Name>_NNNN.jpg`
(the official `lfw*.tgz` archives unpack like that). Pairs-file lines are `Name<TAB>i<TAB>j` (same person) or
`Name1<TAB>i<TAB>Name2<TAB>j` (different people); the header is `n` (one set: n same then n different) or
`folds n` (View 2: "10 300", each fold n same then n different).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

VIEW1_TRAIN = "pairsDevTrain.txt"
VIEW1_TEST = "pairsDevTest.txt"
VIEW2 = "pairs.txt"


class PairsFormatError(ValueError):
    """A pairs file that does not follow the LFW format its header announces."""


@dataclass(frozen=True, order=True)
class ImageRef:
    """Image `index` of identity `name` (1-based, as LFW numbers them)."""

    name: str
    index: int

    @property
    def relative(self) -> str:
        return f"{self.name}/{self.name}_{self.index:04d}.jpg"


@dataclass(frozen=True)
class Pair:
    first: ImageRef
    second: ImageRef

    @property
    def same(self) -> bool:
        return self.first.name == self.second.name


@dataclass(frozen=True)
class PairsFile:
    """Pairs in folds: View 1 files have one fold, View 2's pairs.txt ten."""

    path: Path | None
    folds: tuple[tuple[Pair, ...], ...]

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return tuple(p for fold in self.folds for p in fold)

    def images(self) -> list[ImageRef]:
        """The distinct images the pairs name, sorted."""
        return sorted({ref for p in self.pairs for ref in (p.first, p.second)})


def _parse_line(line: str, where: str) -> Pair:
    fields = line.split()
    try:
        if len(fields) == 3:
            return Pair(ImageRef(fields[0], int(fields[1])), ImageRef(fields[0], int(fields[2])))
        if len(fields) == 4:
            pair = Pair(ImageRef(fields[0], int(fields[1])), ImageRef(fields[2], int(fields[3])))
            if pair.same:
                raise PairsFormatError(f"{where}: a 4-field line must name two different people: {line!r}")
            return pair
    except ValueError as exc:
        if isinstance(exc, PairsFormatError):
            raise
        raise PairsFormatError(f"{where}: image numbers must be integers: {line!r}") from exc
    raise PairsFormatError(f"{where}: expected 3 or 4 tab-separated fields, got {len(fields)}: {line!r}")


def parse_pairs(text: str, path: Path | None = None) -> PairsFile:
    """Parse a pairs file's text; the header decides the shape and every count is checked."""
    where = str(path or "<pairs>")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise PairsFormatError(f"{where}: empty")
    try:
        header = [int(v) for v in lines[0].split()]
    except ValueError as exc:
        raise PairsFormatError(f"{where}: header must be 'n' or 'folds n', got {lines[0]!r}") from exc
    if len(header) == 1:
        n_folds, per_set = 1, header[0]
    elif len(header) == 2:
        n_folds, per_set = header
    else:
        raise PairsFormatError(f"{where}: header must be 'n' or 'folds n', got {lines[0]!r}")
    body = lines[1:]
    if len(body) != n_folds * 2 * per_set:
        raise PairsFormatError(f"{where}: header {lines[0]!r} announces {n_folds * 2 * per_set} pairs, "
                               f"the file has {len(body)}")
    folds = []
    for f in range(n_folds):
        chunk = body[f * 2 * per_set:(f + 1) * 2 * per_set]
        pairs = tuple(_parse_line(line, f"{where} line {f * 2 * per_set + k + 2}") for k, line in enumerate(chunk))
        if any(not p.same for p in pairs[:per_set]) or any(p.same for p in pairs[per_set:]):
            raise PairsFormatError(f"{where}: fold {f + 1} must list {per_set} same-person pairs, "
                                   f"then {per_set} different-person pairs")
        folds.append(pairs)
    return PairsFile(path, tuple(folds))


def read_pairs(path: Path) -> PairsFile:
    return parse_pairs(Path(path).read_text(), Path(path))


@dataclass(frozen=True)
class LfwFolder:
    """A dataset folder in LFW layout with whichever of the LFW pairs files it holds."""

    root: Path
    image_root: Path
    dev_train: PairsFile | None
    dev_test: PairsFile | None
    view2: PairsFile | None

    @classmethod
    def open(cls, root: Path) -> LfwFolder:
        root = Path(root).resolve()
        image_root = root / "images" if (root / "images").is_dir() else root

        def load(name: str) -> PairsFile | None:
            return read_pairs(root / name) if (root / name).exists() else None

        folder = cls(root, image_root, load(VIEW1_TRAIN), load(VIEW1_TEST), load(VIEW2))
        if not any((folder.dev_train, folder.dev_test, folder.view2)):
            raise FileNotFoundError(f"{root} holds none of {VIEW1_TRAIN}, {VIEW1_TEST}, {VIEW2}")
        return folder

    def path(self, ref: ImageRef) -> Path:
        return self.image_root / ref.relative

    def pairs_files(self) -> dict[str, PairsFile]:
        named = {"dev_train": self.dev_train, "dev_test": self.dev_test, "view2": self.view2}
        return {k: v for k, v in named.items() if v is not None}

    def images(self) -> list[ImageRef]:
        """Every image any of the pairs files names (the set the evaluation embeds), sorted."""
        return sorted({ref for pf in self.pairs_files().values() for ref in pf.images()})

    def missing(self) -> list[ImageRef]:
        return [ref for ref in self.images() if not self.path(ref).is_file()]


def stable_fraction(name: str) -> float:
    """A number in [0, 1) fixed by the name alone (sha256), for deterministic hold-outs independent of order."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64


def by_identity(images: Iterable[ImageRef]) -> dict[str, list[ImageRef]]:
    out: dict[str, list[ImageRef]] = {}
    for ref in sorted(images):
        out.setdefault(ref.name, []).append(ref)
    return out


def format_pairs(pairs: Sequence[Pair], folds: int = 1) -> str:
    """The inverse of parse_pairs (tests, and subsets for quick runs): pairs must already be in file order."""
    per_set = len(pairs) // (2 * folds)
    header = f"{per_set}" if folds == 1 else f"{folds}\t{per_set}"
    lines = [header]
    for p in pairs:
        if p.same:
            lines.append(f"{p.first.name}\t{p.first.index}\t{p.second.index}")
        else:
            lines.append(f"{p.first.name}\t{p.first.index}\t{p.second.name}\t{p.second.index}")
    return "\n".join(lines) + "\n"
