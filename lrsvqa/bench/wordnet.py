"""Find WordNet 3.0 and open it with NLTK's reader, offline.

No PyPI package ships WordNet's data, so this module looks, in order, at:

1. ``$LRSVQA_WORDNET_DIR`` — a WordNet ``dict`` folder (``data.noun``,
   ``index.noun``, …); when set, nothing else is tried;
2. an NLTK ``wordnet`` corpus already on ``nltk.data.path``;
3. Debian's ``wordnet-base`` + ``wordnet-sense-index`` files (``/usr/share/wordnet``)
   and the Princeton install folder (``/usr/local/WordNet-3.0/dict``).

A ``dict`` folder lacks NLTK's ``lexnames`` file, and NLTK (3.9+) refuses
symlinks and hard links, so the files are copied once into
``$XDG_CACHE_HOME/lrsvqa/nltk_data/corpora/wordnet`` (``~/.cache/...``) with a
generated ``lexnames``; that ``nltk_data`` folder is added to ``nltk.data.path``.
Nothing is ever downloaded. When no WordNet is found, WordNetMissingError says
how to install it — the official scorer never runs without synonyms.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lrsvqa.errors import WordNetMissingError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

log = logging.getLogger(__name__)

ENV_VAR = "LRSVQA_WORDNET_DIR"
INSTALL_HINT = (
    f"install with `sudo apt-get install wordnet-base wordnet-sense-index` (or set {ENV_VAR})"
)

#: Folders searched for a WordNet 3.0 ``dict`` after the env var and NLTK's corpus.
SEARCH_DIRS: tuple[Path, ...] = (
    Path("/usr/share/wordnet"),
    Path("/usr/local/share/wordnet"),
    Path("/usr/local/WordNet-3.0/dict"),
)

#: The files NLTK's WordNetCorpusReader opens, other than ``lexnames``.
DICT_FILES: tuple[str, ...] = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)

#: WordNet 3.0 lexicographer files, numbered 00-44 by position (see lexnames(5WN)).
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_STAMP = "lrsvqa-source.json"


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>syntactic category`` per line."""
    return "".join(
        f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
        for i, name in enumerate(LEXNAMES)
    )


def cache_root() -> Path:
    """The ``nltk_data``-style folder that holds the assembled WordNet corpus."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lrsvqa" / "nltk_data"


def missing_files(folder: Path) -> list[str]:
    """Files NLTK needs that ``folder`` lacks (``lexnames`` is generated if absent)."""
    return [name for name in DICT_FILES if not (folder / name).is_file()]


def find_nltk_corpus() -> object | None:
    """An NLTK ``wordnet`` corpus already on ``nltk.data.path``, or None."""
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            return nltk.data.find(resource)
        except LookupError:
            continue
    return None


def find_dict_dir() -> Path | None:
    """The first complete WordNet ``dict`` folder among ``SEARCH_DIRS``, or None."""
    for folder in SEARCH_DIRS:
        if folder.is_dir() and not missing_files(folder):
            return folder
    return None


def _stamp_for(source: Path) -> dict[str, object]:
    files = {}
    for name in DICT_FILES:
        st = (source / name).stat()
        files[name] = [st.st_size, int(st.st_mtime)]
    return {"source": str(source.resolve()), "files": files, "lexnames": lexnames_text()}


def _read_stamp(corpus: Path) -> object:
    try:
        return json.loads((corpus / _STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _private(corpus: Path) -> bool:
    """No entry is group- or world-writable (NLTK refuses to read such files)."""
    try:
        return all(p.stat().st_mode & 0o022 == 0 for p in (corpus, *corpus.iterdir()))
    except OSError:
        return False


def assemble(source: Path, root: Path | None = None) -> Path:
    """Copy the ``dict`` files of ``source`` plus a ``lexnames`` into a corpus folder.

    Returns ``<root>/corpora/wordnet``; reuses it when it was built from the same
    files (same path, sizes and times). Files are copied, not linked: NLTK
    refuses symlinks and hard links. Writes go to a temporary folder first so
    concurrent processes never see a half-built corpus.
    """
    base = cache_root() if root is None else root
    corpus = base / "corpora" / "wordnet"
    stamp = _stamp_for(source)
    if _read_stamp(corpus) == stamp and _private(corpus):
        return corpus
    corpus.parent.mkdir(parents=True, exist_ok=True)
    for folder in (base, corpus.parent):
        folder.chmod(0o755)  # NLTK refuses group- or world-writable data
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpus.parent))
    try:
        for name in DICT_FILES:
            shutil.copyfile(source / name, tmp / name)
            (tmp / name).chmod(0o644)
        lexnames = source / "lexnames"
        if lexnames.is_file():
            shutil.copyfile(lexnames, tmp / "lexnames")
        else:
            (tmp / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        (tmp / "lexnames").chmod(0o644)
        (tmp / _STAMP).write_text(json.dumps(stamp), encoding="utf-8")
        (tmp / _STAMP).chmod(0o644)
        tmp.chmod(0o755)
        if corpus.exists():
            shutil.rmtree(corpus)
        tmp.rename(corpus)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _read_stamp(corpus) == stamp:  # another process finished first
            return corpus
        raise
    log.info("assembled WordNet corpus from %s in %s", source, corpus)
    return corpus


def locate() -> tuple[object, str]:
    """Where WordNet will be read from: ``(corpus root, description)``.

    Raises WordNetMissingError (with the install hint) when none is found.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise WordNetMissingError(f"{ENV_VAR}={env} is not a folder; {INSTALL_HINT}")
        lacking = missing_files(folder)
        if lacking:
            raise WordNetMissingError(
                f"{ENV_VAR}={env} lacks WordNet file(s) {', '.join(lacking)}; {INSTALL_HINT}"
            )
        return _assembled(folder), f"{folder} (from {ENV_VAR})"
    corpus = find_nltk_corpus()
    if corpus is not None:
        return corpus, f"{getattr(corpus, 'path', corpus)} (NLTK corpus)"
    found = find_dict_dir()
    if found is not None:
        return _assembled(found), str(found)
    searched = ", ".join(str(d) for d in SEARCH_DIRS)
    raise WordNetMissingError(
        f"WordNet not found (searched NLTK's data path and {searched}); "
        f"the official scorer needs it for synonyms: {INSTALL_HINT}"
    )


def _assembled(source: Path) -> Path:
    import nltk

    try:
        corpus = assemble(source)
    except OSError as exc:
        raise WordNetMissingError(
            f"cannot prepare WordNet from {source} in {cache_root()}: {exc}; "
            "set XDG_CACHE_HOME to a writable folder"
        ) from exc
    root = str(corpus.parent.parent)
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # NLTK only opens files under its data path
    return corpus


_reader: WordNetCorpusReader | None = None


def load_wordnet() -> WordNetCorpusReader:
    """NLTK's WordNet reader on the located data (built once per process)."""
    global _reader
    if _reader is not None:
        return _reader
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root, where = locate()
    try:
        with warnings.catch_warnings():
            # "multilingual functions are not available": we use English only
            warnings.simplefilter("ignore", UserWarning)
            reader = WordNetCorpusReader(str(root) if isinstance(root, Path) else root, None)
    except (LookupError, OSError, ValueError) as exc:  # NLTK's path checks and bad files
        first = " ".join(str(exc).split())[:300]
        raise WordNetMissingError(
            f"WordNet at {where} cannot be read by NLTK ({type(exc).__name__}: {first}); "
            f"{INSTALL_HINT}"
        ) from exc
    version = reader.get_version()
    if version != "3.0":
        log.warning("WordNet %s at %s: the reference scorer used WordNet 3.0", version, where)
    reader_description[id(reader)] = f"WordNet {version} at {where}"
    log.info("loaded WordNet %s from %s", version, where)
    _reader = reader
    return reader


#: ``id(reader) -> "WordNet 3.0 at <path>"`` for readers made by ``load_wordnet``.
reader_description: dict[int, str] = {}


def describe(reader: object) -> str:
    """Short description of a reader: version and where it was read from."""
    known = reader_description.get(id(reader))
    if known:
        return known
    version = getattr(reader, "get_version", lambda: "?")()
    return f"WordNet {version}"
