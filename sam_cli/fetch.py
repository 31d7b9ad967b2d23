"""Fetching weights: the cache folder, downloads from Meta or a mirror (resumed, locked,
limited, verified by sha256) and the cache's record of what it verified. Reading and loading
a checkpoint is checkpoints.py's."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, DownloadError
from .registry import DEFAULT_BASE_URL, DEFAULT_MODEL, MODELS, ModelType

ENV_CACHE = "SAM_CACHE_DIR"
ENV_BASE_URL = "SAM_BASE_URL"
ENV_SHA_PREFIX = "SAM_SHA256_"  # + model name upper-cased, e.g. SAM_SHA256_VIT_B

# progress(total_bytes_or_None, already_have) -> update(n_bytes) callable, closed by calling
# it with -1. The CLI passes a tqdm-backed one; the library never prints.
ProgressFactory = Callable[[int | None, int], Callable[[int], None]]


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sam"


#: Hugging Face's hub, as huggingface_hub names its address (a test's server on 127.0.0.1)
ENV_HF_ENDPOINT = "HF_ENDPOINT"
HF_ENDPOINT = "https://huggingface.co"
#: the token sent to the hub for a gated file (huggingface_hub's names, the first set)
ENV_HF_TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def from_hub(model: ModelType) -> bool:
    """Whether `model`'s file comes from its gated Hugging Face repository (no mirror set)."""
    return bool(model.weights.hub) and not os.environ.get(ENV_BASE_URL)


def base_url(model: ModelType | None = None) -> str:
    """SAM_BASE_URL (a mirror, for every model), else where Meta publishes `model`'s file (a
    hub repository's resolve URL for a file published there only)."""
    if model is not None and from_hub(model):
        return f"{os.environ.get(ENV_HF_ENDPOINT) or HF_ENDPOINT}".rstrip("/") + f"/{model.weights.hub}/resolve/main/"
    url = os.environ.get(ENV_BASE_URL) or (model.weights.base_url if model is not None else "") or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def hf_token() -> str | None:
    return next((os.environ[k] for k in ENV_HF_TOKENS if os.environ.get(k)), None)


def sha_variable(model: ModelType) -> str:
    """The variable naming a mirror's hash for `model`: SAM_SHA256_VIT_B, SAM_SHA256_SAM2_1_HIERA_TINY."""
    import re

    return ENV_SHA_PREFIX + re.sub(r"[^A-Z0-9]", "_", model.name.upper())


def expected_sha256(model: ModelType) -> str:
    """Meta's hash, unless the user names the hash of the file their mirror serves; "" for a
    file whose hash nobody publishes (SAM 3's: the hub's record of it is checked instead)."""
    return os.environ.get(sha_variable(model), model.weights.sha256).lower()


def _recorded_sha256(model: ModelType) -> str:
    """The hash a file must have: expected_sha256, else (a hash nobody publishes) the one the
    cache recorded when the download was checked against the hub's record; "" if none."""
    want = expected_sha256(model)
    if want:
        return want
    try:
        return _stamp(cached_path(model)).read_text().split()[0]
    except (OSError, IndexError):
        return ""


def describe(model: str | None, checkpoint: str | Path | None) -> str:
    """Names the weights a run uses without loading (or downloading) them: a checkpoint file
    by its real path, size and modification time; one in a bucket by its URL and the store's
    version of it (ETag, size); a model type by the sha256 its file must have."""
    from .io.remote import is_url

    if checkpoint is not None and is_url(str(checkpoint)):
        return f"checkpoint {checkpoint} ({remote_identity(str(checkpoint))})"
    if checkpoint is not None:
        st = _file_stat(checkpoint)
        size = f"{st[1]} bytes, modified {st[2]}" if st else "missing"
        return f"checkpoint {os.path.realpath(checkpoint)} ({size})"
    name = model or DEFAULT_MODEL
    m = MODELS[name]
    want = expected_sha256(m)
    if not want:  # published with no hash: named by where it comes from
        return f"{name} ({m.weights.hub} {m.weights.file_name})"
    return f"{name} sha256 {want}"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_path(model: ModelType) -> Path:
    """Meta's file name for Meta's weights. A mirror's other weights (SAM_SHA256_*) are kept
    under a name holding their hash, so they never pass for Meta's once the variable is gone."""
    name = model.weights.file_name
    want = expected_sha256(model)
    if want != model.weights.sha256:
        stem, _, ext = name.rpartition(".")
        name = f"{stem}.sha256-{want[:16]}.{ext}"
    return cache_dir() / name


#: A download that receives less than STALL_BYTES in STALL_SECONDS is given up (a server that
#: trickles a byte now and then would otherwise hold it for ever; it resumes on the next try).
STALL_SECONDS = 120.0
STALL_BYTES = 1 << 20


def download(
    model: ModelType, *, progress: ProgressFactory | None = None, timeout: float = 60.0,
    replace: bool = False,
) -> Path:
    """Download `model`'s checkpoint into the cache and verify its sha256.

    Bytes go to `<file>.part`, which a later call resumes with an HTTP Range request; the
    verified file is renamed into place, so the cache never holds a partial checkpoint
    under its real name. A cached file is used only if its hash is the expected one (as
    recorded when it was verified, else hashed again now): another file there is refused
    (CheckpointError), or, with `replace` (`sam models download`), fetched again.
    Two processes downloading into one cache take turns (a lock file beside it): the second
    finds the first's verified file.
    """
    dest = cached_path(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        return _download(model, dest, progress, timeout, replace)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock held while the block runs (POSIX flock; none where there is none).
    The lock file is removed when the block ends, while still locked; a process that was
    waiting on the removed file sees it is no longer the one at `path`, and locks anew."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    while True:
        f = open(path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()  # it was removed by the process that held it: lock the new one
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _download(
    model: ModelType, dest: Path, progress: ProgressFactory | None, timeout: float, replace: bool,
) -> Path:
    want = expected_sha256(model)
    if dest.exists():
        if cache_status(model)["verified"]:
            return dest
        if not want and not replace:  # no hash to check it against, and no record that it was
            raise CheckpointError(f"{dest}: sam did not download this file, and its sha256 is published nowhere",
                                  hint=f"run `sam models download {model.name}` to fetch it again, or pass "
                                  "--checkpoint PATH")
        digest = sha256_file(dest)
        if want and digest == want:
            _record_verified(dest, digest)
            return dest
        if not replace:
            raise CheckpointError(
                f"{dest}: the cached file's sha256 is {digest}, not the expected {want}",
                hint=f"run `sam models download {model.name}` to fetch it again, or pass --checkpoint PATH",
            )
        dest.unlink()
        _stamp(dest).unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = base_url(model) + model.weights.file_name
    # Meta's files have a known size; a mirror's other weights at most Content-Length
    limit = model.weights.size if want and want == model.weights.sha256 else None
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "segment-anything-cli"})
    hub = from_hub(model)
    if hub and (token := hf_token()):  # to the hub only, not to the storage it redirects to
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    if have:
        req.add_header("Range", f"bytes={have}-")
    redirects = _Redirects()
    try:
        with urllib.request.build_opener(redirects).open(req, timeout=timeout) as resp:
            if have and resp.status != 206:
                have = 0  # server ignored the range: start again
            if not want:  # published with no hash: the hub's record of the file (its LFS sha256 and size)
                want, limit = _declared(url, model, [*redirects.seen, resp.headers])
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            if limit is not None and total is not None and total > limit:
                raise DownloadError(f"download failed: {url}: the server sends {total} bytes, "
                                    f"but the file has {limit}", hint="is SAM_BASE_URL a SAM mirror?")
            update = progress(total, have) if progress else None
            got = have
            mark, since = got, time.monotonic()
            with open(part, "ab" if have else "wb") as f:
                while block := resp.read1(1 << 20):
                    f.write(block)
                    got += len(block)
                    if update:
                        update(len(block))
                    if (total or limit) is not None and got > (total or limit):
                        raise DownloadError(f"download failed: {url}: more than the "
                                            f"{total or limit} bytes expected")
                    now = time.monotonic()
                    if got - mark >= STALL_BYTES:
                        mark, since = got, now
                    elif now - since > STALL_SECONDS:
                        raise DownloadError(
                            f"download failed: {url}: stalled (less than {STALL_BYTES >> 20} MiB "
                            f"in {STALL_SECONDS:.0f} s)", hint="run the command again to resume it")
            if update:
                update(-1)
            if total is not None and got < total:
                raise DownloadError(
                    f"download failed: {url}: connection closed after {got} of {total} bytes",
                    hint="run the command again to resume the download",
                )
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the .part is already whole
            want = want or _declared(url, model, [*redirects.seen, e.headers])[0]
        elif hub and e.code in (401, 403):
            raise DownloadError(*_gated(url, model, e.code)) from None
        else:
            raise DownloadError(f"download failed: {url}: HTTP {e.code} {e.reason}", hint=_mirror_hint()) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk, not the network
            raise DownloadError(f"download failed: {part}: the disk is full ({e.strerror})",
                                hint="free some space, or set SAM_CACHE_DIR to another disk; "
                                "the download resumes") from None
        if not isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError)) and e.filename:
            raise DownloadError(f"download failed: {e.filename}: cannot write ({e.strerror})",
                                hint="set SAM_CACHE_DIR to a folder you can write") from None
        reason = getattr(e, "reason", e)
        raise DownloadError(f"download failed: {url}: {reason}",
                            hint=_mirror_hint(offline=True) + _token_note(model, hub)) from None
    except http.client.HTTPException as e:
        raise DownloadError(f"download failed: {url}: {type(e).__name__}: {e}",
                            hint=_mirror_hint(offline=True) + _token_note(model, hub)) from None
    digest = sha256_file(part)
    if digest != want:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"download failed: {url}: sha256 {digest} does not match the expected {want}",
            hint="the file was corrupted or is not Meta's; the partial file was removed",
        )
    os.replace(part, dest)
    _record_verified(dest, digest)
    return dest


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping each redirect's headers (the hub's record of
    a file is on its redirect to the storage that serves the bytes)."""

    def __init__(self) -> None:
        self.seen: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.seen.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _declared(url: str, model: ModelType, headers: list) -> tuple[str, int | None]:
    """(sha256, size) of a file as the hub records it (X-Linked-Etag: its LFS object's sha256;
    X-Linked-Size); DownloadError when no response carried a sha256."""
    import re

    for h in headers:
        tag = (h.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", tag):
            size = h.get("X-Linked-Size")
            return tag, int(size) if size and size.isdigit() else None
    raise DownloadError(f"download failed: {url}: the server gives no sha256 for {model.weights.file_name}, and "
                        f"Meta publishes none for {model.name}",
                        hint=f"set {sha_variable(model)} to the sha256 of the file your mirror serves "
                        f"(sha256sum {model.weights.file_name})")


def _hub_page(model: ModelType) -> str:
    return f"{(os.environ.get(ENV_HF_ENDPOINT) or HF_ENDPOINT).rstrip('/')}/{model.weights.hub}"


def _token_note(model: ModelType, hub: bool) -> str:
    """When the hub was never reached: that the file is gated too, if HF_TOKEN is not set (the
    hub's own refusal, which says so, did not come)."""
    if not hub or hf_token() is not None:
        return ""
    return (f"; from the hub, {model.name}'s weights also need HF_TOKEN set (accept the licence on "
            f"{_hub_page(model)} first)")


def _gated(url: str, model: ModelType, code: int) -> tuple[str, str]:
    """What to say when the hub refuses a gated file: (message, hint)."""
    page = _hub_page(model)
    if hf_token() is None:
        return (f"download failed: {url}: HTTP {code}: {model.name}'s weights are gated on Hugging Face and "
                "HF_TOKEN is not set",
                f"accept the licence on {page}, then set HF_TOKEN to a token of that account "
                "(huggingface.co/settings/tokens); or pass --checkpoint PATH")
    if code == 401:
        return (f"download failed: {url}: HTTP 401: Hugging Face refused the token in HF_TOKEN",
                "check the token (huggingface.co/settings/tokens), or pass --checkpoint PATH")
    return (f"download failed: {url}: HTTP 403: the account of HF_TOKEN has no access to {model.weights.hub} yet",
            f"accept the licence on {page} and wait for access to be granted; or pass --checkpoint PATH")


def _mirror_hint(offline: bool = False) -> str:
    """What to try after a failed download: another source, or a look at the mirror set."""
    if os.environ.get(ENV_BASE_URL):
        return (f"{ENV_BASE_URL} is set to {os.environ[ENV_BASE_URL]}: is that mirror up, and does it "
                "serve this file? Or pass a local file with --checkpoint PATH")
    if offline:
        return "no network? download the file elsewhere and pass --checkpoint PATH, or set SAM_BASE_URL to a mirror"
    return "pass a local file with --checkpoint PATH, or set SAM_BASE_URL to a mirror"


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _record_verified(path: Path, digest: str) -> None:
    """Remember that `path` (as it is now: size and mtime) hashed to `digest`."""
    st = path.stat()
    _stamp(path).write_text(f"{digest} {st.st_size} {st.st_mtime_ns}\n")


def cache_status(model: ModelType) -> dict:
    """What the cache holds for `model`: path, present, bytes, verified (its recorded hash
    matches the expected one and the file has not changed since it was hashed)."""
    path = cached_path(model)
    out = {"model": model.name, "file": str(path), "cached": path.is_file(), "bytes": 0,
           "verified": False}
    if out["cached"]:
        st = path.stat()
        out["bytes"] = st.st_size
        try:
            digest, size, mtime = _stamp(path).read_text().split()
            out["verified"] = (  # no published hash: the one checked against the hub's at download
                digest == (expected_sha256(model) or digest) and int(size) == st.st_size
                and int(mtime) == st.st_mtime_ns
            )
        except (OSError, ValueError):
            pass
    return out


def verify_cached(model: ModelType) -> bool:
    """Hash the cached file again; record and return whether it matches."""
    path = cached_path(model)
    if not path.is_file():
        raise CheckpointError(f"{path}: not downloaded", hint=f"run: sam models download {model.name}")
    want = _recorded_sha256(model)
    digest = sha256_file(path)
    ok = digest == want
    if ok:
        _record_verified(path, digest)
    elif want == expected_sha256(model):  # an unpublished hash's record is kept: the file is what changed
        _stamp(path).unlink(missing_ok=True)
    return ok


def _file_stat(path: str | Path) -> tuple[str, int, int] | None:
    """(real path, size, modification time in ns) of a file, or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------ checkpoints in a bucket
def _remote_info(url: str):
    """(the bucket's filesystem, the object's info: size, ETag …), one request; DownloadError
    (exit 6) naming the URL when it cannot be read."""
    from .io.remote import _why, filesystem

    fs = filesystem(url)
    try:
        return fs, fs.info(url)
    except Exception as e:  # noqa: BLE001 - any backend failure names the URL
        raise DownloadError(f"{url}: cannot read the checkpoint ({_why(e)})") from None


def remote_identity(url: str, info: dict | None = None) -> str:
    """What names the object at url as it is now: the store's ETag (its hash, for most
    uploads) and size (from `info`, fs.info's, when the caller has it)."""
    info = info if info is not None else _remote_info(url)[1]
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("LastModified") or ""
    return f"etag {str(tag).strip(chr(34))}, {info.get('size')} bytes"


def fetch_remote(url: str, progress: ProgressFactory | None = None) -> tuple[Path, str]:
    """A checkpoint in a bucket (s3://, gs://, az://) copied into the cache and used from there:
    `<cache>/remote/<hash of the URL>/<name>`, beside a record of the object's identity
    (remote_identity). A later run uses the copy while the object is the same and downloads
    it again when it changed (another ETag or size): never a stale file. Bytes go to a
    `.part` file renamed into place; two processes take turns (a lock). Returns the copy and
    the identity."""
    from .io.remote import Url, _why

    fs, info = _remote_info(url)
    ident = remote_identity(url, info)
    dest = cache_dir() / "remote" / hashlib.sha256(url.encode()).hexdigest()[:16] / Url(url).name
    record = dest.with_name(dest.name + ".source")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        try:
            if dest.is_file() and record.read_text() == f"{url}\n{ident}\n":
                return dest, ident
        except OSError:
            pass
        part = dest.with_name(dest.name + ".part")
        try:
            update = progress(info.get("size"), 0) if progress is not None else None
            with fs.open(url, "rb") as src, open(part, "wb") as out:
                while block := src.read(1 << 22):
                    out.write(block)
                    if update is not None:
                        update(len(block))
            if update is not None:
                update(-1)
        except OSError as e:
            part.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise DownloadError(f"{dest}: no space left while copying {url}") from None
            raise DownloadError(f"{url}: cannot read the checkpoint ({_why(e)})") from None
        except Exception as e:  # noqa: BLE001
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: cannot read the checkpoint ({_why(e)})") from None
        os.replace(part, dest)
        record.write_text(f"{url}\n{ident}\n")
        return dest, ident
