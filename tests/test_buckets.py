"""Inputs from a bucket: a real S3 API on 127.0.0.1 (moto's server, started and stopped here),
read through fsspec and s3fs as a user's run reads AWS: a prefix, a glob, a tar shard in the
bucket, the masks equal to a local run's; a missing bucket, no credentials, a missing extra and
a missing output bucket each one clear line.

Outputs to a bucket: byte for byte a local run's, resumed, in shards merged from the bucket,
and an upload that fails (the server stopped mid-run) failing its image until a rerun."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile

import pytest

from cli_helpers import lines, run_sam, same_trees
from conftest import EXAMPLES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "-f", "coco-rle"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch, tmp_path):
    """Bucket `photos`: in/a/x.jpg, in/b.jpg, in/notes.txt and shards/00000.tar (two images);
    the same images under tmp_path/local for the local run."""
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    try:
        s3.create_bucket(Bucket="photos")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    a, b = (EXAMPLES / "chelsea.jpg").read_bytes(), (EXAMPLES / "coffee.jpg").read_bytes()
    s3.put_object(Bucket="photos", Key="in/a/x.jpg", Body=a)
    s3.put_object(Bucket="photos", Key="in/b.jpg", Body=b)
    s3.put_object(Bucket="photos", Key="in/notes.txt", Body=b"not an image")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("000000.jpg", a), ("000001.jpg", b)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="photos", Key="shards/00000.tar", Body=buf.getvalue())
    local = tmp_path / "local"
    (local / "a").mkdir(parents=True)
    (local / "a" / "x.jpg").write_bytes(a)
    (local / "b.jpg").write_bytes(b)
    return tmp_path


def test_a_prefix_in_a_bucket_gives_the_masks_of_the_local_files(bucket, tiny_ckpt):
    p = run_sam("auto", bucket / "local", "-o", bucket / "l", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    p = run_sam("auto", "s3://photos/in/", "-o", bucket / "r", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [(r["input"], r["status"]) for r in lines(p)] == [("s3://photos/in/a/x.jpg", "ok"),
                                                              ("s3://photos/in/b.jpg", "ok")]
    for key in ("a/x.jpg", "b.jpg"):
        got = json.loads((bucket / "r" / f"{key}.json").read_text())
        assert got["annotations"] == json.loads((bucket / "l" / f"{key}.json").read_text())["annotations"]
    # a glob under the prefix, keyed relative to its part before the wildcard
    p = run_sam("auto", "s3://photos/in/*.jpg", "-o", bucket / "g", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [r["input"] for r in lines(p)] == ["s3://photos/in/b.jpg"]
    assert (bucket / "g" / "b.jpg.json").is_file()


def test_an_earlier_run_s_outputs_under_an_input_prefix_are_not_read_as_inputs(bucket, tiny_ckpt):
    """A run that wrote its PNG masks under the input prefix (s3://photos/in/masks/, its run
    record there): a later run over s3://photos/in/ takes the photos only, and says what it left
    out, as a local folder holding a run record is left out."""
    p = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/in/masks/", "-c", tiny_ckpt, *FAST, "-f", "png")
    assert p.returncode == 0, p.stderr
    q = run_sam("auto", "s3://photos/in/", "-o", bucket / "again", "-c", tiny_ckpt, *FAST)
    assert q.returncode == 0, q.stderr
    assert [r["input"] for r in lines(q)] == ["s3://photos/in/a/x.jpg", "s3://photos/in/b.jpg"]
    assert "not read as inputs (sam's own outputs): s3://photos/in/masks" in q.stderr.decode()


def test_a_tar_shard_in_a_bucket_is_read_a_member_at_a_time(bucket, tiny_ckpt):
    p = run_sam("auto", "s3://photos/shards/{00000..00000}.tar", "-o", bucket / "t", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [r["input"] for r in lines(p)] == ["s3://photos/shards/00000.tar/000000.jpg",
                                              "s3://photos/shards/00000.tar/000001.jpg"]
    assert (bucket / "t" / "00000.tar" / "000001.jpg.json").is_file()


def test_bucket_errors_are_one_clear_line(bucket, tiny_ckpt, monkeypatch):
    p = run_sam("auto", "s3://no-such-bucket/in/", "-o", bucket / "x", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 3, err  # the only input is missing
    assert "s3://no-such-bucket/in/: cannot" in err and "Traceback" not in err
    p = run_sam("auto", "s3://photos/in/", "-o", "s3://no-such-bucket/out/", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 7 and "s3://no-such-bucket/out: no bucket 'no-such-bucket'" in err, err
    assert "Traceback" not in err and not lines(p)  # refused before any image was read
    p = run_sam("auto", "s3://photos/in/", "-o", "ftp://host/out/", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 2 and "not ftp://" in p.stderr.decode()
    p = run_sam("auto", "ftp://host/x.jpg", "-o", bucket / "y", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 2 and "not ftp://" in p.stderr.decode()
    import sys

    import fsspec  # noqa: F401  (its registry module, which `fsspec.registry` the name hides)

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)  # nor loaded before
    for args in (("s3://photos/in/", "-o", bucket / "z"), (bucket / "local", "-o", "s3://photos/out/")):
        p = run_sam("auto", *args, "-c", tiny_ckpt, *FAST)
        err = p.stderr.decode()
        assert p.returncode == 2 and "needs s3fs" in err and "segment-anything-cli[s3]" in err, err


def test_no_credentials_is_a_failed_listing_naming_the_url(bucket, tiny_ckpt, monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    p = run_sam("auto", "s3://photos/in/", "-o", bucket / "c", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert "s3://photos/in/: cannot list" in err and "credentials" in err.lower() and "Traceback" not in err
    assert "testing" not in err  # no secret is ever printed
    p = run_sam("auto", bucket / "local", "-o", "s3://photos/out/", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 7 and "s3://photos/out: cannot write there" in err and "credentials" in err.lower(), err
    assert not lines(p) and "Traceback" not in err and "testing" not in err


# ------------------------------------------------------------------------- outputs
def _download(prefix: str, dest):
    """Every object under s3://photos/<prefix>/ into the folder dest, as a local run lays it."""
    import boto3

    s3 = boto3.client("s3")
    objs = s3.list_objects_v2(Bucket="photos", Prefix=prefix + "/").get("Contents", [])
    for o in objs:
        path = dest / o["Key"][len(prefix) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket="photos", Key=o["Key"])["Body"].read())
    return sorted(o["Key"][len(prefix) + 1:] for o in objs)


OUTS = [*FAST[:-2], "-f", "png", "-f", "coco", "-f", "overlay"]


def test_a_bucket_to_bucket_run_is_a_local_run_byte_for_byte_and_resumes(bucket, tiny_ckpt):
    local = run_sam("auto", "local", "-o", "l", "-c", tiny_ckpt, *OUTS, cwd=bucket)
    assert local.returncode == 0, local.stderr
    p = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/out/", "-c", tiny_ckpt, *OUTS)
    assert p.returncode == 0, p.stderr
    got = lines(p)
    assert [(r["status"], r["outputs"]) for r in got] == [
        ("ok", ["s3://photos/out/a/x.jpg.masks", "s3://photos/out/a/x.jpg.json", "s3://photos/out/a/x.jpg.overlay.jpg"]),
        ("ok", ["s3://photos/out/b.jpg.masks", "s3://photos/out/b.jpg.json", "s3://photos/out/b.jpg.overlay.jpg"])]
    assert "wrote s3://photos/out/coco.json" in p.stderr.decode()
    keys = _download("out", bucket / "r")
    assert "sam-run.json" in keys and not [k for k in keys if "/." in k or k.startswith(".")]  # no temporary keys
    assert same_trees(bucket / "l", bucket / "r") == []
    # a rerun skips both, counting their masks from the bucket, and writes coco.json again
    again = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/out/", "-c", tiny_ckpt, *OUTS)
    assert again.returncode == 0, again.stderr
    assert [(r["status"], r["masks"]) for r in lines(again)] == [("skipped", r["masks"]) for r in got]
    # an image whose manifest is missing (a run stopped between its masks and metadata.csv) is redone
    import boto3

    boto3.client("s3").delete_object(Bucket="photos", Key="out/b.jpg.masks/metadata.csv")
    third = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/out/", "-c", tiny_ckpt, *OUTS)
    assert [r["status"] for r in lines(third)] == ["skipped", "ok"], third.stderr
    _download("out", bucket / "r2")
    assert same_trees(bucket / "l", bucket / "r2") == []
    # other settings are refused by the bucket's run record, as a folder's
    other = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/out/", "-c", tiny_ckpt, *OUTS, "--box-nms-thresh", "0.5")
    assert other.returncode == 2 and "s3://photos/out: its outputs were made by another run" in other.stderr.decode()


def test_shards_into_a_bucket_merge_from_it(bucket, tiny_ckpt, monkeypatch):
    plain = run_sam("auto", "local", "-o", "plain", "-c", tiny_ckpt, *OUTS, cwd=bucket)
    assert plain.returncode == 0, plain.stderr
    for i in range(2):
        p = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/sh/", "-c", tiny_ckpt, *OUTS, "--shard", f"{i}/2")
        assert p.returncode == 0, p.stderr
        assert f"wrote s3://photos/sh/sam-shards/{i}-of-2.json" in p.stderr.decode()
    m = run_sam("merge", "s3://photos/sh/")
    assert m.returncode == 0, m.stderr
    assert "wrote s3://photos/sh/coco.json" in m.stderr.decode()
    # merged again in this process, its listings counted: the bucket is listed once, not once to
    # read the shard records and again to write
    from sam_cli.cli.merge import merge
    from sam_cli.io.bucket import BucketLayout

    listed, real = [], BucketLayout._list
    monkeypatch.setattr(BucketLayout, "_list", lambda self: listed.append(self.url) or real(self))
    merge("s3://photos/sh/", quiet=True)
    assert listed == ["s3://photos/sh"]
    _download("sh", bucket / "sh")
    assert same_trees(bucket / "plain", bucket / "sh") == []
    p = run_sam("merge", "s3://photos/in/")
    assert p.returncode == 2 and "s3://photos/in: no shard records" in p.stderr.decode()


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_an_upload_that_fails_fails_its_image_and_a_rerun_finishes_it(bucket, tiny_ckpt, s3_server):
    """The server stops after the first image's outputs: the next image fails naming its object,
    the run exits 5; once the server is back, a rerun does that image alone."""
    import subprocess
    import sys

    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="stop")
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        (bucket / "three").mkdir(exist_ok=True)
        (bucket / "three" / name).write_bytes((EXAMPLES / name).read_bytes())
    cmd = [sys.executable, "-m", "sam_cli", "auto", str(bucket / "three"), "-o", "s3://stop/out/", "-c", str(tiny_ckpt),
           *OUTS, "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = json.loads(proc.stdout.readline())
    server.stop()  # mid-run: the images after the first have nowhere to go
    out, err = proc.communicate(timeout=300)
    rest = [json.loads(x) for x in out.decode().splitlines()]
    err = err.decode()
    assert first["status"] == "ok" and proc.returncode == 5, err
    assert rest and all(r["status"] == "failed" for r in rest), rest
    assert all("s3://stop/out/" in r["error"] and "cannot upload" in r["error"] for r in rest), rest
    assert "Traceback" not in err and "coco" not in {r.get("input") for r in rest}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # the same in-process store: what was uploaded before is there
    try:
        again = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
        statuses = [json.loads(x)["status"] for x in again.stdout.decode().splitlines()]
        assert again.returncode == 0, again.stderr
        assert statuses.count("skipped") == 1 and statuses.count("ok") == 2, statuses
    finally:
        server.stop()


@pytest.mark.heavy  # two worker processes, then a local Ray: CI runs it after the default run
def test_workers_and_ray_from_a_bucket_to_a_bucket(bucket, tiny_ckpt):
    """--devices and --ray local without a shared folder: every process reads the bucket and
    uploads its images' outputs; the parent writes coco.json from the bucket. Each process on
    one thread, as the plain run (a CPU's float sums follow its thread count)."""
    one = {"SAM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    plain = run_sam("auto", "local", "-o", "plain", "-c", tiny_ckpt, *OUTS, cwd=bucket, env=one)
    assert plain.returncode == 0, plain.stderr
    for name, flags in (("workers", ["--devices", "cpu,cpu"]), ("ray", ["--ray", "local"])):
        p = run_sam("auto", "s3://photos/in/", "-o", f"s3://photos/{name}/", "-c", tiny_ckpt, *OUTS, *flags, env=one)
        assert p.returncode == 0, p.stderr
        assert sorted(r["status"] for r in lines(p)) == ["ok", "ok"]
        _download(name, bucket / name)
        assert same_trees(bucket / "plain", bucket / name) == [], name


def test_reads_overlap_up_to_read_ahead_and_decoding_keeps_to_its_threads():
    """stream.read_ahead with reads=8 and 2 decoding threads: 8 fetches of members' bytes in
    flight at once (a bucket's latency hidden), at most 2 decodes at once, never more than 8
    images fetched and not yet taken by the model, order kept; items without a member (files
    on disk) are read by the decoding threads alone."""
    import threading
    import time
    from dataclasses import dataclass
    from pathlib import Path

    from sam_cli.cli.options import REMOTE_READ_AHEAD
    from sam_cli.cli.options import read_ahead as default_read_ahead
    from sam_cli.inputs import InputItem
    from sam_cli.job import RunOptions
    from sam_cli.stream import read_ahead

    lock = threading.Lock()
    state = {"fetching": 0, "most_fetching": 0, "loading": 0, "most_loading": 0, "held": 0, "most_held": 0}

    def enter(what):
        with lock:
            state[what] += 1
            state["most_" + what] = max(state["most_" + what], state[what])

    def leave(what):
        with lock:
            state[what] -= 1

    @dataclass(frozen=True)
    class SlowObject:  # a bucket's object: each read answers after 50 ms
        name: str

        def read_bytes(self) -> bytes:
            enter("fetching")
            time.sleep(0.05)
            leave("fetching")
            return self.name.encode()

    def load(item):
        enter("loading")
        data = item.member.read_bytes() if item.member is not None else b"disk"
        time.sleep(0.005)  # decoding
        leave("loading")
        enter("held")
        return item.rel, data

    items = [InputItem(Path(f"{i}.jpg"), f"{i}.jpg", member=SlowObject(f"{i}.jpg")) for i in range(40)]
    got = []
    for rel, data in read_ahead(load, items, workers=2, ahead=2, reads=8):
        leave("held")
        got.append((rel, data))
    assert got == [(it.rel, it.rel.encode()) for it in items]
    assert state["most_fetching"] == 8 and state["most_loading"] <= 2 and state["most_held"] <= 8, state
    # files on disk: the decoding threads read them, no fetch
    disk = [InputItem(Path(f"{i}.jpg"), f"{i}.jpg") for i in range(5)]
    assert [r for r, _ in read_ahead(load, disk, workers=2, ahead=2, reads=8)] == [it.rel for it in disk]
    # the option's default: REMOTE_READ_AHEAD reads when an input is a URL, none for files on disk
    assert default_read_ahead(None, ["photos/"]) is None and default_read_ahead(3, ["s3://b/x/"]) == 3
    assert default_read_ahead(None, ["photos/", "s3://b/x/"]) == REMOTE_READ_AHEAD
    assert RunOptions(workers=2, read_ahead=REMOTE_READ_AHEAD).reads == REMOTE_READ_AHEAD
    assert RunOptions(workers=2).reads == 0


def test_a_checkpoint_and_an_embedding_cache_in_a_bucket(bucket, tiny_ckpt, monkeypatch):
    """-c s3://…: copied into the cache and used while the object is unchanged, named in the run
    record by URL and ETag; --embedding-cache s3://…: entries are objects, the second run reads
    them all and gives the same masks."""
    import boto3

    s3 = boto3.client("s3")
    s3.put_object(Bucket="photos", Key="models/tiny.pth", Body=tiny_ckpt.read_bytes())
    local = run_sam("auto", "local", "-o", "l", "-c", tiny_ckpt, *FAST, cwd=bucket)
    assert local.returncode == 0, local.stderr
    args = ["local", "-c", "s3://photos/models/tiny.pth", *FAST, "--embedding-cache", "s3://photos/emb/"]
    p = run_sam("auto", *args, "-o", "c1", cwd=bucket)
    assert p.returncode == 0, p.stderr
    assert "embedding cache: 0 of 2 embeddings read from s3://photos/emb" in p.stderr.decode()
    assert same_trees(bucket / "l", bucket / "c1", ignore=("sam-run.json",)) == []
    record = json.loads((bucket / "c1" / "sam-run.json").read_text())
    assert record["weights"].startswith("checkpoint s3://photos/models/tiny.pth (etag ")
    entries = s3.list_objects_v2(Bucket="photos", Prefix="emb/")["Contents"]
    assert len(entries) == 2 and all(o["Key"].endswith(".npz") for o in entries)
    from sam_cli.fetch import cache_dir

    copy = next(cache_dir().joinpath("remote").rglob("tiny.pth"))
    stamp = copy.stat().st_mtime_ns
    q = run_sam("auto", *args, "-o", "c2", cwd=bucket)
    assert q.returncode == 0, q.stderr
    assert "embedding cache: 2 of 2 embeddings read from s3://photos/emb" in q.stderr.decode()
    assert same_trees(bucket / "l", bucket / "c2", ignore=("sam-run.json",)) == []
    assert copy.stat().st_mtime_ns == stamp  # the object is unchanged: the cached copy is used
    # the object replaced: the folder's run record refuses the other weights; with --overwrite
    # the new object is copied into the cache and used
    s3.put_object(Bucket="photos", Key="models/tiny.pth", Body=tiny_ckpt.read_bytes() + b"\0")
    r = run_sam("auto", *args, "-o", "c2", cwd=bucket)
    assert r.returncode == 2 and "its outputs were made by another run" in r.stderr.decode(), r.stderr
    r = run_sam("auto", *args, "-o", "c2", "--overwrite", cwd=bucket)
    assert r.returncode == 0, r.stderr
    assert copy.stat().st_size == tiny_ckpt.stat().st_size + 1
    missing = run_sam("auto", "local", "-c", "s3://photos/models/none.pth", *FAST, "-o", "c3", cwd=bucket)
    err = missing.stderr.decode()
    assert missing.returncode == 6 and "s3://photos/models/none.pth: cannot read the checkpoint" in err, err
    assert "Traceback" not in err


def test_a_prompt_file_and_its_images_in_a_bucket(bucket, tiny_ckpt):
    """--prompts s3://…/boxes.jsonl: its images beside it in the bucket (or under --images
    s3://…), the masks those of the same prompts on local files."""
    import boto3

    rows = "".join(json.dumps({"image": n, "objects": [{"box": [10, 10, 200, 150]}]}) + "\n"
                   for n in ("a/x.jpg", "b.jpg"))
    (bucket / "local" / "boxes.jsonl").write_text(rows)
    boto3.client("s3").put_object(Bucket="photos", Key="in/boxes.jsonl", Body=rows.encode())
    want = run_sam("segment", "--prompts", "local/boxes.jsonl", "-o", "l", "-c", tiny_ckpt, "-f", "coco-rle", cwd=bucket)
    assert want.returncode == 0, want.stderr
    for extra in ([], ["--images", "s3://photos/in/"]):
        p = run_sam("segment", "--prompts", "s3://photos/in/boxes.jsonl", *extra, "-o", f"r{len(extra)}",
                    "-c", tiny_ckpt, "-f", "coco-rle", cwd=bucket)
        assert p.returncode == 0, p.stderr
        assert [r["input"] for r in lines(p)] == ["s3://photos/in/a/x.jpg", "s3://photos/in/b.jpg"]
        assert same_trees(bucket / "l", bucket / f"r{len(extra)}", ignore=("sam-run.json",)) == []
        record = json.loads((bucket / f"r{len(extra)}" / "sam-run.json").read_text())
        assert record["settings"]["prompts"].startswith("s3://photos/in/boxes.jsonl sha256:")
    p = run_sam("segment", "--prompts", "s3://photos/in/none.jsonl", "-o", "r9", "-c", tiny_ckpt)
    err = p.stderr.decode()
    assert p.returncode == 2 and "--prompts s3://photos/in/none.jsonl: cannot read it" in err, err


def test_one_image_from_a_bucket_and_its_outputs_on_a_disk(bucket, tiny_ckpt):
    """sam segment s3://…/x.jpg reads the object; an output URL for one image is refused (it
    would have become a local folder named `s3:`), naming the way to a bucket."""
    p = run_sam("segment", "s3://photos/in/b.jpg", "--box", "10,10,200,150", "-o", "m.json", "-c", tiny_ckpt,
                cwd=bucket)
    q = run_sam("segment", "local/b.jpg", "--box", "10,10,200,150", "-o", "n.json", "-c", tiny_ckpt, cwd=bucket)
    assert p.returncode == 0 and q.returncode == 0, p.stderr + q.stderr
    assert [(r["area"], r["bbox"]) for r in lines(p)] == [(r["area"], r["bbox"]) for r in lines(q)]
    for flag in ("-o", "--overlay"):
        args = ["-o", "m.png"] if flag == "--overlay" else []
        r = run_sam("segment", "local/b.jpg", "--box", "10,10,200,150", *args, flag, "s3://photos/out/m.png",
                    "-c", tiny_ckpt, cwd=bucket)
        err = r.stderr.decode()
        assert r.returncode == 2 and "sam segment on one image writes files on a disk" in err and "--prompts" in err
        assert not (bucket / "s3:").exists()
    r = run_sam("segment", "s3://photos/in/none.jpg", "--point", "5,5", "-o", "m.png", "-c", tiny_ckpt, cwd=bucket)
    assert r.returncode == 3 and "s3://photos/in/none.jpg: cannot read" in r.stderr.decode(), r.stderr


def test_a_killed_run_s_staging_folder_is_removed_by_the_next_and_a_live_one_is_not(tmp_path):
    """A run killed mid-way (SIGKILL) cannot remove its staging folder; the next run's sweep
    removes the folders whose process is gone and leaves the others: a live process's, and a
    folder whose name gives no process."""
    import subprocess
    import sys

    from sam_cli.io.bucket import STAGE_PREFIX, sweep_stale_stages

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dirs = {name: tmp_path / f"{STAGE_PREFIX}{name}" for name in
                (f"{gone.pid}-abc", f"{live.pid}-def", f"{os.getpid()}-ghi", "xyz")}
        for d in dirs.values():
            (d / "a.jpg.json").parent.mkdir(parents=True)
            (d / "a.jpg.json").write_text("{}")
        sweep_stale_stages(tmp_path)
        assert {n for n, d in dirs.items() if d.exists()} == {f"{live.pid}-def", f"{os.getpid()}-ghi", "xyz"}
    finally:
        live.kill()
        live.wait()
