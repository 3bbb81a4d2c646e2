"""Class folders: `root/<class>/**/<files>`, listed and checked against class names."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

logger = logging.getLogger("tfft.data")

# Folder names that name a split, not a class.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "dev": "validation", "test": "test", "testing": "test"}


def list_class_folder(
    root: str, extensions: Sequence[str]
) -> dict[str, list[str]]:
    """`{class_name: sorted files}` for each non-hidden subfolder of `root`."""
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is not a directory (expected one subfolder per class).")
    classes = sorted(
        e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise ValueError(f"{root!r} has no class subfolders; expected {root}/<class>/<files>.")
    _refuse_split_folders(root, classes)
    listing = {}
    for name in classes:
        files = []
        for folder, dirs, names in os.walk(os.path.join(root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [
                os.path.join(folder, f)
                for f in sorted(names)
                if f.lower().endswith(tuple(extensions)) and not f.startswith(".")
            ]
        listing[name] = files
    return listing


def _refuse_split_folders(root, classes):
    """`root/train/<class>/...` (and val/, test/) is pre-split data, not classes named train and val."""
    splits = [c for c in classes if c.lower() in SPLIT_FOLDERS]
    if len(splits) < 2 or len(splits) != len(classes):
        return
    if not all(any(e.is_dir() for e in os.scandir(os.path.join(root, c))) for c in splits):
        return
    given = ", ".join(f"{SPLIT_FOLDERS[c.lower()]!r}: {os.path.join(root, c)!r}" for c in splits)
    raise ValueError(
        f"{root!r} holds split folders ({', '.join(splits)}), each with class subfolders, not one folder per "
        f"class: pass the splits as a mapping, e.g. {{{given}}} (then no validation_split / test_split is needed "
        "for the splits you give).")


def resolve_folder_classes(
    listing: Mapping[str, list[str]],
    class_names: Sequence[str] | None,
    root: str,
    what: str,
) -> tuple[str, ...]:
    """Checks class folders against `class_names`; returns the class names."""
    explicit = class_names is not None
    names = tuple(class_names) if explicit else tuple(listing)
    for name in names:
        if not listing.get(name):
            message = (
                f"Class folder {os.path.join(root, name)!r} has no {what}."
            )
            if not explicit:
                raise ValueError(
                    message + " Add files, remove the folder, or list the class in "
                    "class_names= to keep it with zero examples."
                )
            logger.warning("%s The class is kept with zero examples.", message)
    return names


def folder_examples(
    listing: Mapping[str, list[str]],
    class_names: Sequence[str],
    root: str,
) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    """Pairs each file with its folder's class; folders outside the list are bad."""
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels, bad = [], [], []
    for name, files in listing.items():
        if name not in index:
            if files:
                bad.append(
                    (os.path.join(root, name),
                     f"class {name!r} is not in class_names, {len(files)} file(s)")
                )
            continue
        paths += files
        labels += [index[name]] * len(files)
    return paths, labels, bad

