"""Fetch the PhysioNet/CinC Challenge 2012 files and verify their checksums.

Usage::

    python datasets/physionet2012/fetch.py [--dest DIR] [--local DIR]

Each of ``set-a.tar.gz``, ``set-b.tar.gz``, ``Outcomes-a.txt`` and ``Outcomes-b.txt`` is taken, in
this order of preference, from ``--dest`` when it is already there and verifies; from a local copy
(``--local``, default ``../shared/data/physionet2012`` next to the repository when that folder
exists); or downloaded from https://physionet.org/files/challenge-2012/1.0.0/. A file is accepted
when its sha256 equals the recorded one or, for an archive, when its *content digest* does: the
sha256 of one line ``<member base name> <sha256 of member bytes>`` per ``.txt`` member, sorted by
name. The content digest ignores how the archive was packed (timestamps, order, compression), so a
fresh download from PhysioNet verifies even if its bytes differ from the copy recorded here.

Exit status 0 on success, 1 with a message on stderr on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

BASE_URL = "https://physionet.org/files/challenge-2012/1.0.0/"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOCAL = REPO_ROOT.parent / "shared" / "data" / "physionet2012"
DEFAULT_DEST = Path(__file__).resolve().parent / "raw"

#: name -> (sha256 of the file, content digest); for a plain file the two are the same.
FILES = {
    "set-a.tar.gz": (
        "d782490ed4809e52532bc9e5e9bf98b82709781a7b24ff60ddbc516659ffd152",
        "0c90af4bbb41c696c9a1228b365060193ae852fda62074dfa3fabd93f7ff3ba6",
    ),
    "set-b.tar.gz": (
        "9bd3bed5eb3c643adec72400e804f968d487c8d16f972ee5fa6a4b13dc34c913",
        "88dfac000fc00be3259de4c45660eed1c604329c57ba2afd707a36f15763ab0a",
    ),
    "Outcomes-a.txt": (
        "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2",
        "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2",
    ),
    "Outcomes-b.txt": (
        "1305f29734da374a809483229a99f33a9230aa8d4fa74b1a2d6ad788136423d5",
        "1305f29734da374a809483229a99f33a9230aa8d4fa74b1a2d6ad788136423d5",
    ),
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of the bytes of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: Path) -> str:
    """Content digest of an archive (see the module docstring); the sha256 of any other file."""
    if not tarfile.is_tarfile(path):
        return sha256_file(path)
    lines = []
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".txt"):
                data = archive.extractfile(member).read()
                base = member.name.rsplit("/", 1)[-1]
                lines.append(f"{base} {hashlib.sha256(data).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def verify(path: Path, expected: tuple[str, str]) -> str:
    """Return ``"sha256"`` or ``"content"`` (which digest matched); raise ValueError if neither."""
    file_digest, expected_content = expected
    found = sha256_file(path)
    if found == file_digest:
        return "sha256"
    found_content = content_digest(path)
    if found_content == expected_content:
        return "content"
    raise ValueError(
        f"checksum mismatch for {path}: sha256 {found} (expected {file_digest}),"
        f" content digest {found_content} (expected {expected_content})"
    )


def _obtain(name: str, target: Path, local: Path | None, base_url: str) -> str:
    """Copy or download ``name`` into ``target``; return where it came from."""
    if local is not None and (local / name).is_file():
        shutil.copyfile(local / name, target)
        return f"copied from {local / name}"
    url = base_url + name
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as error:
        raise OSError(
            f"could not download {url} ({error}); without network access, pass --local DIR"
            " with a copy of the files"
        ) from error
    return f"downloaded from {url}"


def fetch(dest: Path, local: Path | None, files=FILES, base_url: str = BASE_URL) -> list[Path]:
    """Make every file of ``files`` present and verified in ``dest``; return their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, expected in files.items():
        path = dest / name
        if path.is_file():
            try:
                verify(path, expected)
                print(f"{name}: already present and verified")
                paths.append(path)
                continue
            except ValueError:
                print(f"{name}: present but does not verify, fetching again")
        partial = dest / (name + ".part")
        try:
            origin = _obtain(name, partial, local, base_url)
            matched = verify(partial, expected)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        print(f"{name}: {origin}, verified ({matched})")
        paths.append(path)
    return paths


def main(argv=None, files=FILES) -> int:
    """Command-line entry point; ``files`` maps names to expected digests (tests pass their own)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST,
        help=f"folder to write the files to (default: {DEFAULT_DEST})",
    )  # fmt: skip
    parser.add_argument(
        "--local", type=Path, default=None,
        help=f"folder holding a local copy (default: {DEFAULT_LOCAL} if it exists)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    local = args.local
    if local is None and DEFAULT_LOCAL.is_dir():
        local = DEFAULT_LOCAL
    try:
        if local is not None and not local.is_dir():
            raise FileNotFoundError(f"--local folder {local} does not exist")
        fetch(args.dest, local, files)
    except (OSError, ValueError) as error:
        print(f"fetch.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
