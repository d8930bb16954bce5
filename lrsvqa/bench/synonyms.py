"""A WordNet synonym table that answers exactly as NLTK's ``wn.synsets`` does, fast.

The official scorer asks one question of WordNet: do two words share a synset?
NLTK answers it after importing itself (~2 s) and parsing every index file
(~2-4 s). Both answers depend only on the four ``index.*`` files (lemma -> part of
speech -> synset offsets) and the four ``*.exc`` files (irregular forms), plus
NLTK's ``_morphy`` rules. This module parses those eight files once, stores
them in ``$XDG_CACHE_HOME/lrsvqa/wordnet-table/<sha256 of the files>.marshal``
and replays ``synsets`` on them: a cold process loads the table in ~0.1 s and
never imports NLTK. The checksum is recomputed from the source files on every
load, so a changed WordNet builds a new table.

A synset is named here by ``(pos, offset)`` (``pos`` among ``n v a r``; each
part of speech has its own data file, so the pair is unique); NLTK names it
``lemma.pos.NN``, which is equally unique, so "share a synset" has the same
answer. When a table is built, its answers are checked against NLTK's reader
on thousands of words (every irregular form, inflections of a spread of
lemmas); any difference means this NLTK's rules differ from the ones replayed
here, and the scorer falls back to NLTK itself, with a warning.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import marshal
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsvqa.bench import wordnet as wordnet_mod
from lrsvqa.errors import WordNetMissingError

log = logging.getLogger(__name__)

#: Bump when the table's layout or the replayed rules change.
TABLE_FORMAT = 1

#: Parts of speech NLTK's ``synsets`` tries, in its order, with their file suffix.
POS_FILES: tuple[tuple[str, str], ...] = (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv"))

#: NLTK's ``WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS`` (3.9+).
SUBSTITUTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("ves", "f"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}

#: The files the table is built from (and checksummed).
SOURCE_FILES: tuple[str, ...] = tuple(
    name for _, suffix in POS_FILES for name in (f"index.{suffix}", f"{suffix}.exc")
)

_VERSION = re.compile(rb"WordNet (\d+|\d+\.\d+) Copyright")


@dataclass(frozen=True)
class WordNetFiles:
    """Where the WordNet files are: a ``dict`` folder or an NLTK ``wordnet.zip``."""

    where: str
    folder: Path | None = None
    archive: Path | None = None
    member_prefix: str = "wordnet/"

    def read(self, name: str) -> bytes:
        """The bytes of one WordNet file."""
        try:
            if self.folder is not None:
                return (self.folder / name).read_bytes()
            assert self.archive is not None
            with zipfile.ZipFile(self.archive) as zf:
                return zf.read(self.member_prefix + name)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise WordNetMissingError(
                f"cannot read WordNet file {name} at {self.where}: {exc}; "
                f"{wordnet_mod.INSTALL_HINT}"
            ) from exc


def nltk_data_dirs() -> list[str]:
    """NLTK's data path: the live one when NLTK is imported, else its defaults
    (``$NLTK_DATA``, ``~/nltk_data``, the prefix and system folders), computed
    without importing NLTK."""
    nltk = sys.modules.get("nltk")
    if nltk is not None and hasattr(nltk, "data"):
        ours = str(wordnet_mod.cache_root())  # the copy ``wordnet.assemble`` made: not a source
        return [
            str(p) for p in nltk.data.path if isinstance(p, str | os.PathLike) and str(p) != ours
        ]
    dirs = [os.path.expanduser(d) for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    if os.path.expanduser("~/") != "~/":
        dirs.append(os.path.expanduser("~/nltk_data"))
    dirs += [
        os.path.join(sys.prefix, "nltk_data"),
        os.path.join(sys.prefix, "share", "nltk_data"),
        os.path.join(sys.prefix, "lib", "nltk_data"),
        "/usr/share/nltk_data",
        "/usr/local/share/nltk_data",
        "/usr/lib/nltk_data",
        "/usr/local/lib/nltk_data",
    ]
    return dirs


def locate_files() -> WordNetFiles:
    """The WordNet files ``wordnet.locate`` would pick, found without importing NLTK:
    ``$LRSVQA_WORDNET_DIR``, else an NLTK ``corpora/wordnet`` (folder or zip) on
    NLTK's data path, else the first complete folder of ``wordnet.SEARCH_DIRS``."""
    env = os.environ.get(wordnet_mod.ENV_VAR)
    if env:
        folder = Path(env).expanduser()
        hint = wordnet_mod.INSTALL_HINT
        if not folder.is_dir():
            raise WordNetMissingError(f"{wordnet_mod.ENV_VAR}={env} is not a folder; {hint}")
        lacking = _missing(folder)
        if lacking:
            raise WordNetMissingError(
                f"{wordnet_mod.ENV_VAR}={env} lacks WordNet file(s) {', '.join(lacking)}; {hint}"
            )
        return WordNetFiles(f"{folder} (from {wordnet_mod.ENV_VAR})", folder=folder)
    for base in nltk_data_dirs():
        folder = Path(base) / "corpora" / "wordnet"
        if folder.is_dir() and not _missing(folder):
            return WordNetFiles(f"{folder} (NLTK corpus)", folder=folder)
        archive = Path(base) / "corpora" / "wordnet.zip"
        if archive.is_file():
            return WordNetFiles(f"{archive} (NLTK corpus)", archive=archive)
    found = wordnet_mod.find_dict_dir()
    if found is not None:
        return WordNetFiles(str(found), folder=found)
    wordnet_mod.locate()  # raises WordNetMissingError with the install hint
    raise AssertionError("unreachable: locate() found WordNet where this search did not")


def _missing(folder: Path) -> list[str]:
    return [name for name in SOURCE_FILES if not (folder / name).is_file()]


def checksum(files: WordNetFiles) -> tuple[str, dict[str, bytes]]:
    """SHA-256 over the source files' names and bytes, and those bytes."""
    digest = hashlib.sha256(f"lrsvqa-synonyms {TABLE_FORMAT}\n".encode())
    data = {}
    for name in SOURCE_FILES:
        data[name] = files.read(name)
        digest.update(name.encode() + b"\0" + str(len(data[name])).encode() + b"\0")
        digest.update(data[name])
    return digest.hexdigest(), data


@dataclass
class SynonymTable:
    """Lemma -> synset offsets per part of speech, and irregular forms, of one WordNet."""

    index: dict[str, dict[str, tuple[int, ...]]]
    exceptions: dict[str, dict[str, tuple[str, ...]]]
    version: str
    where: str
    digest: str
    _cache: dict[str, frozenset[tuple[str, int]]] = field(default_factory=dict, repr=False)

    def _morphy(self, form: str, pos: str) -> list[str]:
        # NLTK 3.9+ ``_morphy``: the exception list, else one round of substitutions;
        # keep the forms (the original first) that the index lists for ``pos``.
        exceptions = self.exceptions[pos]
        if form in exceptions:
            forms = list(exceptions[form])
        else:
            forms = [
                form[: -len(old)] + new for old, new in SUBSTITUTIONS[pos] if form.endswith(old)
            ]
        index = self.index[pos]
        return list(dict.fromkeys(f for f in [form, *forms] if f in index))

    def synset_keys(self, word: str) -> frozenset[tuple[str, int]]:
        """The synsets ``wn.synsets(word)`` returns, as ``(pos, offset)`` pairs."""
        cached = self._cache.get(word)
        if cached is None:
            lemma = word.lower()
            cached = frozenset(
                (pos, offset)
                for pos, _ in POS_FILES
                for form in self._morphy(lemma, pos)
                for offset in self.index[pos][form]
            )
            self._cache[word] = cached
        return cached

    def describe(self) -> str:
        """``WordNet 3.0 at <where>``, as the NLTK path describes its reader."""
        return f"WordNet {self.version} at {self.where}"


def parse(data: dict[str, bytes], where: str, digest: str = "") -> SynonymTable:
    """Build a table from the source files' bytes (as NLTK parses them)."""
    index: dict[str, dict[str, tuple[int, ...]]] = {}
    exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
    version = "?"
    for pos, suffix in POS_FILES:
        entries: dict[str, tuple[int, ...]] = {}
        name = f"index.{suffix}"
        for n, raw in enumerate(data[name].decode("utf-8").splitlines(), start=1):
            if raw.startswith(" "):
                if version == "?" and (m := _VERSION.search(raw.encode())):
                    version = m.group(1).decode()
                continue
            tokens = raw.split()
            if not tokens:
                continue
            try:
                n_synsets = int(tokens[2])
                n_pointers = int(tokens[3])
                start = 4 + n_pointers + 2
                offsets = tuple(int(t) for t in tokens[start : start + n_synsets])
                if n_synsets <= 0 or len(offsets) != n_synsets or tokens[1] != pos:
                    raise ValueError(f"expected {n_synsets} offsets for part of speech {pos}")
            except (IndexError, ValueError) as exc:
                raise WordNetMissingError(
                    f"{where}: {name} line {n} is not a WordNet index line ({exc}); "
                    f"{wordnet_mod.INSTALL_HINT}"
                ) from exc
            entries[tokens[0]] = offsets
        index[pos] = entries
        forms: dict[str, tuple[str, ...]] = {}
        for raw in data[f"{suffix}.exc"].decode("utf-8").splitlines():
            terms = raw.split()
            if terms:
                forms[terms[0]] = tuple(terms[1:])
        exceptions[pos] = forms
    return SynonymTable(index, exceptions, version, where, digest)


def table_dir() -> Path:
    """Where built tables are kept: ``$XDG_CACHE_HOME/lrsvqa/wordnet-table``."""
    return wordnet_mod.cache_root().parent / "wordnet-table"


def _cache_file(digest: str) -> Path:
    py = f"py{sys.version_info.major}{sys.version_info.minor}"  # marshal's format is per version
    return table_dir() / f"{digest}-{py}.marshal"


def _read_cache(path: Path, digest: str, where: str) -> tuple[SynonymTable, bool] | None:
    """The cached table and whether it matched NLTK when built; None if absent or stale."""
    enabled = gc.isenabled()
    gc.disable()  # ~300k new objects would trigger full collections for nothing
    try:
        with open(path, "rb") as fh:
            stored = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        if enabled:
            gc.enable()
    if not isinstance(stored, dict) or stored.get("digest") != digest:
        return None
    table = SynonymTable(stored["index"], stored["exceptions"], stored["version"], where, digest)
    return table, bool(stored.get("matches_nltk"))


def _write_cache(path: Path, table: SynonymTable, matches_nltk: bool) -> None:
    payload = {
        "digest": table.digest,
        "version": table.version,
        "index": table.index,
        "exceptions": table.exceptions,
        "matches_nltk": matches_nltk,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".table-", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            marshal.dump(payload, fh)
        os.replace(tmp, path)  # readers never see a half-written table
        for stale in path.parent.glob("*.marshal"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot cache the WordNet synonym table in %s: %s", path.parent, exc)


def check_words(table: SynonymTable, step: int = 100) -> list[str]:
    """Words that exercise every rule: each irregular form, and a spread of lemmas
    with the endings the substitution rules undo."""
    words: list[str] = []
    for pos, _ in POS_FILES:
        words.extend(table.exceptions[pos])
        for lemma in list(table.index[pos])[::step]:
            words.extend((lemma, lemma + "s", lemma + "es", lemma + "ed", lemma + "ing"))
            words.extend((lemma + "er", lemma + "est", lemma.upper()))
    words.extend(("", "3", "three", "parking lot", "parking_lot", "yes.", " no", "men", "ships"))
    return list(dict.fromkeys(words))


def nltk_keys(reader: Any, word: str) -> frozenset[tuple[str, int]]:
    """``reader.synsets(word)`` as ``(pos, offset)`` pairs (satellites live in data.adj)."""
    return frozenset(("a" if s.pos() == "s" else s.pos(), s.offset()) for s in reader.synsets(word))


def disagreements(table: SynonymTable, reader: Any, words: list[str]) -> list[str]:
    """Words on which the table and NLTK's reader give different synsets."""
    return [w for w in words if table.synset_keys(w) != nltk_keys(reader, w)]


_loaded: SynonymTable | None = None


def load_table(*, verify: bool = True) -> SynonymTable | None:
    """The synonym table of the located WordNet: cached, or built and cached.

    Returns None when this NLTK answers differently from the replayed rules
    (checked at build time when ``verify``); callers then use NLTK itself.
    """
    global _loaded
    files = locate_files()
    digest, data = checksum(files)
    if _loaded is not None and _loaded.digest == digest:
        return _loaded
    path = _cache_file(digest)
    cached = _read_cache(path, digest, files.where)
    if cached is not None:
        table, matches = cached
    else:
        table = parse(data, files.where, digest)
        matches = True
        if verify:
            words = check_words(table)
            wrong = disagreements(table, wordnet_mod.load_wordnet(), words)
            matches = not wrong
            if wrong:
                log.warning(
                    "WordNet synonym table disagrees with NLTK on %d of %d words (e.g. %r); "
                    "scoring with NLTK's reader",
                    len(wrong),
                    len(words),
                    wrong[:3],
                )
            else:
                log.info("WordNet synonym table agrees with NLTK on %d words", len(words))
        _write_cache(path, table, matches)
        log.info("built the WordNet synonym table from %s into %s", files.where, path)
    if not matches:
        return None
    _loaded = table
    return table
